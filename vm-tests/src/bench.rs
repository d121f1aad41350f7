//! `cargo xtask bench`: what enforcer costs, measured in the VM.
//!
//! One boot per kernel runs interleaved rounds; each round measures the configurations
//! without the enforcer, starts it (timing start-up to READY=1), measures the enforced
//! configurations, reads the daemon's memory and stops it. Drift (and other load on the
//! host) thus hits every configuration alike. A figure is the median over the rounds,
//! with min and max; a comparison is a ratio of two medians of the same boot.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::{
    cpio::Archive,
    report::Report,
    vm::{self, Boot, Kernel},
};

/// A minimal static `x86_64` ELF executable: `exit(0)`, nothing else. The exec path's cost
/// without a loader, libc or page faults beyond one page is what the hook adds to.
pub fn tiny_elf() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const EHDR: u16 = 64;
    const PHDR: u16 = 56;
    // xor edi, edi; mov eax, 60 (exit); syscall
    const CODE: [u8; 9] = [0x31, 0xff, 0xb8, 0x3c, 0x00, 0x00, 0x00, 0x0f, 0x05];
    let size = u64::from(EHDR + PHDR) + CODE.len() as u64;
    let mut elf = Vec::with_capacity(size as usize);
    elf.extend_from_slice(&[
        0x7f, b'E', b'L', b'F', 2, /* 64-bit */
        1, /* LE */
        1, /* version */
    ]);
    elf.resize(16, 0);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    elf.extend_from_slice(&(BASE + u64::from(EHDR + PHDR)).to_le_bytes()); // entry: the code
    elf.extend_from_slice(&u64::from(EHDR).to_le_bytes()); // program headers right after
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    for half in [EHDR, PHDR, 1 /* phnum */, 64 /* shentsize */, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    // One PT_LOAD, read+execute, mapping the whole file at BASE.
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&5u32.to_le_bytes());
    for word in [0, BASE, BASE, size, size, 0x1000] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(&CODE);
    elf
}

/// The docker CLI's global options, 20 of them in every form the parser knows (values
/// attached, separate, grouped booleans), before an allowed command: the most work the
/// hook's argv scan does for an allowed exec.
pub const GLOBAL_OPTIONS: &[&[&str]] = &[
    &["-D"],
    &["--debug"],
    &["-l", "info"],
    &["--log-level=info"],
    &["--log-level", "debug"],
    &["-H", "unix:///run/docker.sock"],
    &["--host=unix:///run/docker.sock"],
    &["--host", "unix:///run/docker.sock"],
    &["--tls"],
    &["--tlsverify"],
    &["--tlscacert=/etc/docker/ca.pem"],
    &["--tlscert", "/etc/docker/cert.pem"],
    &["--tlskey=/etc/docker/key.pem"],
    &["--config", "/etc/docker"],
    &["-c", "default"],
    &["--context=default"],
    &["-Dl", "debug"],
    &["-lwarn"],
    &["-H=unix:///run/docker.sock"],
    &["--config=/etc/docker"],
];

/// The allowed command after the options.
pub const STUB_COMMAND: &str = "ps";

/// argv of the docker-shaped stub: `docker <20 global options> ps`.
pub fn stub_argv() -> Vec<String> {
    let mut argv = vec!["docker".to_string()];
    argv.extend(GLOBAL_OPTIONS.iter().flat_map(|o| o.iter().map(ToString::to_string)));
    argv.push(STUB_COMMAND.to_string());
    argv
}

const TINY: &str = "/usr/local/bin/bench-true";
const STUB: &str = "/opt/bench/docker";
const WRAPPER: &str = "/opt/bench/wrapper/docker";
const BENCH_EXEC: &str = "/usr/local/bin/bench-exec";
const POLICY: &str = "/etc/enforcer/bench.toml";

/// The stub is the rule's only binary: its own file, so the kernel identity differs from
/// the tiny program's.
fn policy() -> String {
    format!(
        "# cargo xtask bench: ai-worker (1001) is restricted, its docker is the stub.\n\
         [[rule]]\nname = \"bench\"\nusers = [\"ai-worker\"]\nbinaries = [\"{STUB}\"]\n\
         deny = [{}]\n",
        crate::fixtures::SEED_DENY_LIST.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
    )
}

/// The fix enforcer replaces: a bash wrapper in front of docker that refuses blacklisted
/// subcommands and runs the real client for the rest.
fn wrapper() -> String {
    format!(
        "#!/usr/bin/bash\n\
         blocked=({})\n\
         for arg in \"$@\"; do\n\
         \x20   case $arg in -*) continue ;; esac\n\
         \x20   for word in \"${{blocked[@]}}\"; do\n\
         \x20       if [[ $arg == \"$word\" ]]; then\n\
         \x20           echo \"docker $arg is not allowed\" >&2\n\
         \x20           exit 1\n\
         \x20       fi\n\
         \x20   done\n\
         done\n\
         exec {STUB} \"$@\"\n",
        crate::fixtures::SEED_DENY_LIST.join(" ")
    )
}

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub rounds: usize,
    /// Timed execs per run of (1)-(4) and the bare stub.
    pub iterations: u64,
    /// Timed execs per run of the bash wrapper (each costs a bash start-up).
    pub wrapper_iterations: u64,
    /// Run QEMU with `-icount shift=0`: the guest's clock counts executed instructions
    /// (1 ns each) instead of following the host's wall clock, so other load on the host
    /// does not show in the figures.
    pub icount: bool,
    /// Run the exec boot (figures (1)-(6)).
    pub exec: bool,
    /// Rounds of the API gate's boot (the real dockerd); 0: no such boot.
    pub api_rounds: usize,
    /// `GET /containers/json` round trips per run, on one keep-alive connection.
    pub api_requests: u64,
    /// `docker ps` runs per run.
    pub ps_iterations: u64,
    /// Size of the build context's big file, MiB.
    pub upload_mib: u64,
}

impl Default for Config {
    /// `cargo xtask bench`'s defaults.
    fn default() -> Config {
        Config {
            rounds: 8,
            iterations: 1000,
            wrapper_iterations: 100,
            icount: true,
            exec: true,
            api_rounds: 3,
            api_requests: 200,
            ps_iterations: 10,
            upload_mib: 200,
        }
    }
}

/// QEMU arguments of the instruction-counting clock.
pub const ICOUNT_ARGS: &[&str] = &["-icount", "shift=0"];

impl Config {
    fn warmup(n: u64) -> u64 {
        (n / 20).max(1)
    }
}

/// The configurations timed in each round: (key, user, program, argv, enforced, label).
struct Measure {
    key: &'static str,
    user: &'static str,
    path: &'static str,
    enforced: bool,
    label: &'static str,
}

const MEASURES: &[Measure] = &[
    Measure {
        key: "tiny_bare",
        user: "bob",
        path: TINY,
        enforced: false,
        label: "(1) tiny program, no enforcer",
    },
    Measure {
        key: "stub_bare",
        user: "ai-worker",
        path: STUB,
        enforced: false,
        label: "    docker stub + 20 options, no enforcer",
    },
    Measure {
        key: "wrapper",
        user: "ai-worker",
        path: WRAPPER,
        enforced: false,
        label: "(5) stub through the bash wrapper, no enforcer",
    },
    Measure {
        key: "tiny_unrestricted",
        user: "bob",
        path: TINY,
        enforced: true,
        label: "(2) tiny program, enforcer, unrestricted user",
    },
    Measure {
        key: "tiny_restricted",
        user: "ai-worker",
        path: TINY,
        enforced: true,
        label: "(3) tiny program, enforcer, restricted user",
    },
    Measure {
        key: "stub_enforced",
        user: "ai-worker",
        path: STUB,
        enforced: true,
        label: "(4) docker stub + 20 options, enforcer, restricted",
    },
];

fn argv_of(measure: &Measure) -> Vec<String> {
    if measure.path == TINY { vec!["bench-true".to_string()] } else { stub_argv() }
}

/// The VM side: plain observations, judged on the host.
#[expect(
    clippy::format_push_string,
    reason = "the script is built line by line; `write!` would add an infallible `fmt::Result` to every line, and one allocation per line does not matter here"
)]
pub fn script(config: &Config) -> String {
    // The kernel's own accounting of each BPF program's runs: the hooks' cost measured
    // directly, not as a small difference of two exec rates.
    let mut s = String::from("start_mock_api\necho 1 > /proc/sys/kernel/bpf_stats_enabled\n");
    let loop_step = |s: &mut String, round: usize, m: &Measure| {
        let n = if m.key == "wrapper" { config.wrapper_iterations } else { config.iterations };
        s.push_str(&format!(
            "step r{round}-{} {} {BENCH_EXEC} loop {n} {} {} {}\n",
            m.key,
            m.user,
            Config::warmup(n),
            m.path,
            argv_of(m).join(" ")
        ));
    };
    for round in 1..=config.rounds {
        // Echoed to the host's terminal as progress.
        s.push_str(&format!("echo \"bench: round {round} of {}\"\n", config.rounds));
        let bare = |s: &mut String| {
            // Nothing may enforce during the bare runs.
            s.push_str(&format!("step r{round}-pins root ls /sys/fs/bpf/enforcer\n"));
            for m in MEASURES.iter().filter(|m| !m.enforced) {
                loop_step(s, round, m);
            }
        };
        // Odd rounds measure bare then enforced, even rounds enforced then bare: neither
        // side always runs first after a start or a stop.
        if round % 2 == 1 {
            bare(&mut s);
        }
        s.push_str(&format!(
            "step r{round}-start root {BENCH_EXEC} start /tmp/enforcer-r{round}.log /usr/local/sbin/enforcer run -v --config {POLICY}\n\
             PID=$(sed -n 's/^pid=\\([0-9]*\\) .*/\\1/p' /tmp/step.out)\n\
             step r{round}-hooks-start root /usr/local/sbin/enforcer status --json --limit 0\n"
        ));
        for m in MEASURES.iter().filter(|m| m.enforced) {
            loop_step(&mut s, round, m);
            s.push_str(&format!(
                "step r{round}-{}-hooks root /usr/local/sbin/enforcer status --json --limit 0\n",
                m.key
            ));
        }
        s.push_str(&format!(
            "step r{round}-mem root {BENCH_EXEC} mem $PID\n\
             step r{round}-status root /usr/local/sbin/enforcer status --json --limit 0\n\
             step r{round}-stop root /usr/local/sbin/enforcer stop\n\
             step r{round}-exit root {BENCH_EXEC} wait-exit $PID\n\
             report_file r{round}-log /tmp/enforcer-r{round}.log\n"
        ));
        if round % 2 == 0 {
            bare(&mut s);
        }
    }
    s.push_str(&format!(
        "step check root /usr/local/sbin/enforcer check --config {POLICY} --user ai-worker -- {}\n\
         step verify root /usr/local/sbin/enforcer verify\n",
        stub_argv().join(" ")
    ));
    s
}

/// Median, min and max of a set of runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(values: &[f64]) -> Option<Stats> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 { sorted[n / 2] } else { f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]) };
        Some(Stats { median, min: sorted[0], max: sorted[n - 1] })
    }

    fn json(&self, runs: &[f64]) -> Value {
        json!({ "median": self.median, "min": self.min, "max": self.max, "runs": runs })
    }
}

/// `key=value` fields of a helper's output line.
fn fields(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split_whitespace().filter_map(|w| w.split_once('='))
}

fn field(text: &str, name: &str) -> Option<f64> {
    fields(text).find(|(k, _)| *k == name).and_then(|(_, v)| v.parse().ok())
}

/// Everything one boot measured, per round.
#[derive(Debug, Default)]
pub struct Measured {
    /// Per configuration key: ns per exec of each round.
    pub per_exec_ns: Vec<(&'static str, Vec<f64>)>,
    /// `enforcer run` to READY=1, ms, per round.
    pub startup_ms: Vec<f64>,
    /// The daemon's own "enforcing after N ms" (from `main()` on), per round.
    pub startup_internal_ms: Vec<f64>,
    pub rss_kib: Vec<f64>,
    pub hwm_kib: Vec<f64>,
    /// The `-v` start-up stages of the last round: (stage, ms since start).
    pub stages: Vec<(String, f64)>,
    /// Verifier: (program, instructions processed).
    pub verifier: Vec<(String, u64)>,
    /// Execs the hook judged with the full engine (counter `checked`), per round.
    pub checked: Vec<f64>,
    /// Per enforced configuration: the hooks' own run time per exec (ns, all programs,
    /// from the kernel's BPF statistics), per round.
    pub hook_ns: Vec<(&'static str, Vec<f64>)>,
    pub check_output: String,
    /// The API gate's boot, when it ran.
    pub api: Option<ApiMeasured>,
}

impl Measured {
    /// Reads a boot's report; any missing or failed step is an error that names it.
    pub fn from_report(report: &Report, config: &Config) -> Result<Measured> {
        let step = |name: &str| -> Result<&str> {
            let (rc, out) = report.step(name).ok_or_else(|| anyhow!("step {name} did not run"))?;
            if *rc != 0 {
                bail!("step {name} failed (exit {rc}): {out}");
            }
            Ok(out.as_str())
        };
        let mut m = Measured::default();
        for measure in MEASURES {
            let mut runs = Vec::new();
            for round in 1..=config.rounds {
                let name = format!("r{round}-{}", measure.key);
                let out = step(&name)?;
                let (execs, failed, ns) = (field(out, "execs"), field(out, "failed"), field(out, "ns"));
                let (Some(execs), Some(failed), Some(ns)) = (execs, failed, ns) else {
                    bail!("step {name}: unexpected output {out:?}");
                };
                if failed != 0.0 {
                    bail!("step {name}: {failed} of {execs} execs failed (refused by the hook?)");
                }
                runs.push(ns / execs);
            }
            m.per_exec_ns.push((measure.key, runs));
        }
        for round in 1..=config.rounds {
            let pins = report.step(&format!("r{round}-pins")).map(|s| s.0);
            if pins == Some(0) {
                bail!("round {round}: something was pinned under /sys/fs/bpf/enforcer before the bare runs");
            }
            let start = step(&format!("r{round}-start"))?;
            m.startup_ms.push(field(start, "ready_ns").context("no ready_ns")? / 1e6);
            let mem = step(&format!("r{round}-mem"))?;
            m.rss_kib.push(field(mem, "rss_kib").context("no rss_kib")?);
            m.hwm_kib.push(field(mem, "hwm_kib").context("no hwm_kib")?);
            let status: Value = serde_json::from_str(step(&format!("r{round}-status"))?)
                .context("enforcer status --json is not JSON")?;
            m.checked.push(status["counters"]["checked"].as_f64().context("no counters.checked in status")?);
            let mut before = program_totals(step(&format!("r{round}-hooks-start"))?)?;
            for measure in MEASURES.iter().filter(|m| m.enforced) {
                let after = program_totals(step(&format!("r{round}-{}-hooks", measure.key))?)?;
                let (runs, time) = (after.0 - before.0, after.1 - before.1);
                let per_exec = if runs > 0.0 { time / runs } else { f64::NAN };
                match m.hook_ns.iter_mut().find(|(k, _)| *k == measure.key) {
                    Some((_, values)) => values.push(per_exec),
                    None => m.hook_ns.push((measure.key, vec![per_exec])),
                }
                before = after;
            }
            step(&format!("r{round}-stop"))?;
            step(&format!("r{round}-exit"))?;
            let log = report.file(&format!("r{round}-log")).unwrap_or_default();
            let internal = log
                .lines()
                .find_map(|l| l.strip_prefix("enforcer: enforcing after "))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|ms| ms.parse().ok())
                .ok_or_else(|| {
                    anyhow!("round {round}: the daemon's log has no \"enforcing after\": {log}")
                })?;
            m.startup_internal_ms.push(internal);
            if round == config.rounds {
                m.stages = stages(log);
            }
        }
        let check = report.step("check").ok_or_else(|| anyhow!("step check did not run"))?;
        if check.0 != 0 {
            bail!("the stub's argv is not allowed by `enforcer check` (exit {}): {}", check.0, check.1);
        }
        m.check_output = check.1.trim().to_string();
        m.verifier = verifier_counts(step("verify")?);
        if m.verifier.is_empty() {
            bail!("enforcer verify printed no instruction counts");
        }
        Ok(m)
    }

    fn runs(&self, key: &str) -> &[f64] {
        self.per_exec_ns.iter().find(|(k, _)| *k == key).map(|(_, r)| r.as_slice()).unwrap_or_default()
    }

    fn median(&self, key: &str) -> f64 {
        Stats::of(self.runs(key)).map_or(f64::NAN, |s| s.median)
    }
}

/// From `enforcer status --json`: the exec hook's run count (one per exec) and the run
/// time of every enforcing program together (ns).
fn program_totals(status: &str) -> Result<(f64, f64)> {
    let status: Value = serde_json::from_str(status).context("enforcer status --json is not JSON")?;
    let programs = status["programs"].as_array().context("no programs in status")?;
    let execs = programs
        .iter()
        .find(|p| p["name"] == "enforcer_bprm")
        .and_then(|p| p["run_count"].as_f64())
        .context("no enforcer_bprm in status programs")?;
    let time = programs.iter().filter_map(|p| p["run_time_ns"].as_f64()).sum();
    Ok((execs, time))
}

/// `enforcer run -v` lines: "enforcer: [  123.4 ms] stage".
fn stages(log: &str) -> Vec<(String, f64)> {
    log.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("enforcer: [")?;
            let (ms, stage) = rest.split_once(" ms] ")?;
            Some((stage.to_string(), ms.trim().parse().ok()?))
        })
        .collect()
}

/// `enforcer verify` lines: "`enforcer_bprm`: verified, 15615 instructions processed".
fn verifier_counts(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(": verified, ")?;
            Some((name.to_string(), rest.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// A target and whether the measurement met it.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub name: String,
    pub measured: String,
    pub target: String,
    pub met: bool,
    pub value: f64,
    /// For ratios: the same ratio within each round, to show how much it moves.
    pub per_round: Vec<f64>,
}

/// The issues' targets, each judged on one boot's medians: the exec boot's (when it ran),
/// then the API boot's.
pub fn verdicts(m: &Measured) -> Vec<Verdict> {
    let mut out = if m.per_exec_ns.is_empty() { Vec::new() } else { exec_verdicts(m) };
    if let Some(api) = &m.api {
        out.extend(api_verdicts(api));
    }
    out
}

fn exec_verdicts(m: &Measured) -> Vec<Verdict> {
    let ratio = |a: &str, b: &str| m.median(a) / m.median(b);
    let overhead = |r: f64| format!("{:+.2}%", (r - 1.0) * 100.0);
    let mut out = Vec::new();
    for (name, key, base, limit) in [
        ("(2) unrestricted user vs (1)", "tiny_unrestricted", "tiny_bare", 1.01),
        ("(3) restricted user, other program vs (1)", "tiny_restricted", "tiny_bare", 1.01),
        ("(4) restricted docker stub vs bare stub", "stub_enforced", "stub_bare", 1.03),
    ] {
        let r = ratio(key, base);
        let per_round: Vec<f64> = m.runs(key).iter().zip(m.runs(base)).map(|(a, b)| a / b).collect();
        let spread = Stats::of(&per_round)
            .map(|s| format!("; rounds {} to {}", overhead(s.min), overhead(s.max)))
            .unwrap_or_default();
        out.push(Verdict {
            name: name.to_string(),
            measured: format!("ratio {r:.4} ({}{spread})", overhead(r)),
            target: format!("<= {limit:.2} ({})", overhead(limit)),
            met: r <= limit,
            value: r,
            per_round,
        });
    }
    let bare = m.median("stub_bare");
    let hook_cost = m.median("stub_enforced") - bare;
    let wrapper_cost = m.median("wrapper") - bare;
    // A hook cost at or below zero is below what the bench can resolve: the wrapper's
    // cost is then more than any multiple of it.
    let factor = if hook_cost > 0.0 { wrapper_cost / hook_cost } else { f64::INFINITY };
    out.push(Verdict {
        name: "(5) wrapper's added cost / (4)'s added cost".to_string(),
        measured: format!(
            "{} ({:.1} us vs {:.2} us per exec)",
            if factor.is_finite() {
                format!("{factor:.0}x")
            } else {
                "inf (hook cost not measurable)".into()
            },
            wrapper_cost / 1e3,
            hook_cost / 1e3
        ),
        target: ">= 20x".to_string(),
        met: factor >= 20.0,
        value: factor,
        per_round: Vec::new(),
    });
    let startup = Stats::of(&m.startup_ms).map_or(f64::NAN, |s| s.median);
    out.push(Verdict {
        name: "start-up, `enforcer run` to enforcing".to_string(),
        measured: format!("{startup:.0} ms"),
        target: "< 500 ms".to_string(),
        met: startup < 500.0,
        value: startup,
        per_round: Vec::new(),
    });
    let rss = Stats::of(&m.rss_kib).map_or(f64::NAN, |s| s.median) / 1024.0;
    out.push(Verdict {
        name: "daemon RSS".to_string(),
        measured: format!("{rss:.1} MiB"),
        target: "< 20 MiB".to_string(),
        met: rss < 20.0,
        value: rss,
        per_round: Vec::new(),
    });
    for (name, key, base, limit) in [
        ("(2) by the hooks' own run time (bpf_stats)", "tiny_unrestricted", "tiny_bare", 0.01),
        ("(3) by the hooks' own run time (bpf_stats)", "tiny_restricted", "tiny_bare", 0.01),
        ("(4) by the hooks' own run time (bpf_stats)", "stub_enforced", "stub_bare", 0.03),
    ] {
        let hook = m.hook_ns.iter().find(|(k, _)| *k == key).and_then(|(_, v)| Stats::of(v));
        let Some(hook) = hook else { continue };
        let share = hook.median / m.median(base);
        out.push(Verdict {
            name: name.to_string(),
            measured: format!("{:.0} ns per exec, {:+.3}% of the exec", hook.median, share * 100.0),
            target: format!("<= {:+.2}%", limit * 100.0),
            met: share <= limit,
            value: share,
            per_round: Vec::new(),
        });
    }
    out
}

/// One kernel's results as JSON (written to target/bench/<kernel>.json).
pub fn to_json(kernel: &Kernel, config: &Config, m: &Measured) -> Value {
    let mut figures = serde_json::Map::new();
    for measure in MEASURES {
        let runs = m.runs(measure.key);
        let iterations = if measure.key == "wrapper" { config.wrapper_iterations } else { config.iterations };
        if let Some(stats) = Stats::of(runs) {
            let mut figure = stats.json(runs);
            figure["label"] = json!(measure.label.trim());
            figure["user"] = json!(measure.user);
            figure["enforcer"] = json!(measure.enforced);
            figure["iterations_per_run"] = json!(iterations);
            figure["execs_per_second"] = json!(1e9 / stats.median);
            figures.insert(measure.key.to_string(), figure);
        }
    }
    let stat = |values: &[f64]| Stats::of(values).map_or(Value::Null, |s| s.json(values));
    json!({
        "kernel": kernel.label,
        "release": kernel.release,
        "rounds": config.rounds,
        "iterations": config.iterations,
        "wrapper_iterations": config.wrapper_iterations,
        "clock": if config.icount { "qemu -icount shift=0 (1 ns per guest instruction)" } else { "host wall clock (TCG)" },
        "unit": "ns per exec (fork + execve + waitpid)",
        "stub_argv": stub_argv(),
        "stub_check": m.check_output,
        "figures": figures,
        "startup_ms": stat(&m.startup_ms),
        "startup_internal_ms": stat(&m.startup_internal_ms),
        "startup_stages_ms_last_round": m.stages.iter().map(|(s, ms)| json!({"stage": s, "ms": ms})).collect::<Vec<_>>(),
        "daemon_rss_kib": stat(&m.rss_kib),
        "daemon_hwm_kib": stat(&m.hwm_kib),
        "hook_checked_counter": m.checked,
        "hook_run_time_ns_per_exec": m.hook_ns.iter().map(|(k, v)| (k.to_string(), stat(v))).collect::<serde_json::Map<_, _>>(),
        "verifier_instructions": m.verifier.iter().map(|(p, n)| (p.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "targets": verdicts(m).iter().map(|v| json!({
            "name": v.name, "measured": v.measured, "target": v.target, "met": v.met,
            "value": if v.value.is_finite() { json!(v.value) } else { Value::Null },
            "per_round": v.per_round,
        })).collect::<Vec<_>>(),
        "api_gate": m.api.as_ref().map_or(Value::Null, |api| api_json(config, api)),
    })
}

/// The human-readable table.
#[expect(
    clippy::format_push_string,
    reason = "the table is built line by line; `write!` would add an infallible `fmt::Result` to every line, and one allocation per line does not matter here"
)]
pub fn table(kernel: &Kernel, config: &Config, m: &Measured) -> String {
    let mut t = format!(
        "kernel {} ({})\nclock: {}\n",
        kernel.label,
        kernel.release,
        if config.icount {
            "QEMU -icount (1 ns per guest instruction: host load does not show)"
        } else {
            "host wall clock under TCG (host load shows)"
        }
    );
    if !m.per_exec_ns.is_empty() {
        exec_table(&mut t, config, m);
    }
    if let Some(api) = &m.api {
        api_table(&mut t, config, api);
    }
    t.push_str("\ntargets:\n");
    for v in verdicts(m) {
        t.push_str(&format!(
            "  {:<4} {:<50} target {:<16} measured {}\n",
            if v.met { "met" } else { "MISS" },
            v.name,
            v.target,
            v.measured
        ));
    }
    t
}

#[expect(
    clippy::format_push_string,
    reason = "the table is built line by line; `write!` would add an infallible `fmt::Result` to every line, and one allocation per line does not matter here"
)]
fn exec_table(t: &mut String, config: &Config, m: &Measured) {
    t.push_str(&format!(
        "\n{} rounds, {} execs per run ({} for the wrapper), median [min - max]\n\n",
        config.rounds, config.iterations, config.wrapper_iterations,
    ));
    t.push_str(&format!(
        "{:<52} {:>10} {:>23} {:>10}\n",
        "exec (fork+execve+waitpid)", "us/exec", "[min - max]", "execs/s"
    ));
    for measure in MEASURES {
        if let Some(s) = Stats::of(m.runs(measure.key)) {
            t.push_str(&format!(
                "{:<52} {:>10.1} {:>23} {:>10.0}\n",
                measure.label,
                s.median / 1e3,
                format!("[{:.1} - {:.1}]", s.min / 1e3, s.max / 1e3),
                1e9 / s.median
            ));
        }
    }
    let line = |t: &mut String, name: &str, values: &[f64], unit: &str, scale: f64| {
        if let Some(s) = Stats::of(values) {
            t.push_str(&format!(
                "{:<52} {:>10.1} {:>23}\n",
                format!("{name} ({unit})"),
                s.median / scale,
                format!("[{:.1} - {:.1}]", s.min / scale, s.max / scale)
            ));
        }
    };
    t.push('\n');
    line(t, "(6) start-up, `enforcer run` to READY=1", &m.startup_ms, "ms", 1.0);
    line(t, "    the daemon's own count (from main)", &m.startup_internal_ms, "ms", 1.0);
    line(t, "    daemon RSS while enforcing", &m.rss_kib, "MiB", 1024.0);
    line(t, "    daemon peak RSS (start-up)", &m.hwm_kib, "MiB", 1024.0);
    for (key, values) in &m.hook_ns {
        let label = MEASURES.iter().find(|m| m.key == *key).map_or(*key, |m| m.label.trim());
        line(t, &format!("    hooks' run time per exec in {}", &label[..3]), values, "ns", 1.0);
    }
    for (program, count) in &m.verifier {
        t.push_str(&format!("{:<52} {:>10}\n", format!("    verifier instructions, {program}"), count));
    }
    if !m.stages.is_empty() {
        t.push_str("\nstart-up stages (last round, ms since main):\n");
        for (stage, ms) in &m.stages {
            t.push_str(&format!("  {ms:>8.1}  {stage}\n"));
        }
    }
}

/// The bench's own files, appended to the base initramfs.
fn archive(bench_exec: &Path) -> Result<Archive> {
    let mut archive = Archive::new();
    vm::add_binary(&mut archive, BENCH_EXEC, bench_exec)?;
    vm::add_binary(&mut archive, "usr/bin/bash", Path::new("/usr/bin/bash"))
        .context("bash is needed for the wrapper figure")?;
    let elf = tiny_elf();
    archive.file(TINY, 0o755, &elf);
    archive.file(STUB, 0o755, &elf);
    archive.file(WRAPPER, 0o755, wrapper().as_bytes());
    archive.file(POLICY, 0o644, policy().as_bytes());
    Ok(archive)
}

/// Boots `kernel` once per part: the exec figures (base initramfs, when `config.exec`),
/// then the API gate's (base + `docker_initrd`, the real dockerd, when
/// `config.api_rounds > 0`).
pub fn run(
    kernel: &Kernel,
    base_initrd: &Path,
    docker_initrd: Option<&Path>,
    bench_exec: &Path,
    work: &Path,
    config: &Config,
) -> Result<Measured> {
    let mut measured = if config.exec {
        run_exec(kernel, base_initrd, bench_exec, work, config)?
    } else {
        Measured::default()
    };
    if config.api_rounds > 0 {
        let docker = docker_initrd.context("the API bench needs the docker flavour's archive")?;
        measured.api = Some(run_api(kernel, (base_initrd, docker), bench_exec, work, config)?);
    }
    Ok(measured)
}

fn run_exec(
    kernel: &Kernel,
    base_initrd: &Path,
    bench_exec: &Path,
    work: &Path,
    config: &Config,
) -> Result<Measured> {
    let dir: PathBuf = work.join(&kernel.label);
    std::fs::create_dir_all(&dir)?;
    let mut files = archive(bench_exec)?;
    files.file("scenario.sh", 0o644, script(config).as_bytes());
    let scenario = dir.join("bench.cpio");
    files.write_to(&scenario)?;
    let report = vm::boot_with(
        &Boot {
            kernel,
            initrds: vec![base_initrd.to_path_buf(), scenario],
            lsm: vm::DEFAULT_LSM,
            timeout: Duration::from_hours(1),
            work: dir.clone(),
            echo: true,
        },
        if config.icount { ICOUNT_ARGS } else { &[] },
    )?;
    if !report.done {
        bail!("the bench did not run to its end; console in {}", dir.join("console.log").display());
    }
    Measured::from_report(&report, config)
        .with_context(|| format!("console in {}", dir.join("console.log").display()))
}

// ---------------------------------------------------------------------------------------
// The API gate (issue 14's bench): a second boot with the real dockerd.

/// The API boot's policy: ai-worker reaches dockerd only through its rule's gate (and any
/// program may connect to it, so that `api-load` can); bob is restricted by the same deny
/// list without the gate, so bob's `docker ps` pays the same exec check and socket gate
/// as ai-worker's and the two differ by the API gate alone.
pub const API_POLICY: &str = "/etc/enforcer/bench-api.toml";
const API_RULE: &str = "bench-gate";
const API_GATE: &str = "/run/enforcer/gate/bench-gate.sock";
const API_DIRECT: &str = "/run/docker.sock";
const API_PATH: &str = "/v1.41/containers/json";
/// The upload's endpoint: a classic-builder build of the streamed context (quiet).
const API_UPLOAD_PATH: &str = "/v1.41/build?q=1";

fn api_policy() -> String {
    let deny =
        crate::fixtures::SEED_DENY_LIST.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "# cargo xtask bench, API boot: ai-worker through the gate, bob direct (both restricted).\n\
         [[rule]]\nname = \"{API_RULE}\"\nusers = [\"ai-worker\"]\ndeny = [{deny}]\n\
         api_gate = true\napi_clients = \"any\"\n\n\
         [[rule]]\nname = \"bench-direct\"\nusers = [\"bob\"]\ndeny = [{deny}]\napi_gate = false\n"
    )
}

/// One figure of the API boot: its key (`<what>_<side>`), label and unit.
struct ApiMeasure {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
}

const API_MEASURES: &[ApiMeasure] = &[
    ApiMeasure { key: "rtt_direct", label: "GET /containers/json, root on dockerd's socket", unit: "us" },
    ApiMeasure { key: "rtt_gate", label: "GET /containers/json, ai-worker through the gate", unit: "us" },
    ApiMeasure { key: "ps_direct", label: "docker ps, bob (restricted, no gate), direct", unit: "ms" },
    ApiMeasure { key: "ps_gate", label: "docker ps, ai-worker through the gate", unit: "ms" },
    ApiMeasure { key: "ps_root", label: "docker ps, root (unrestricted), direct", unit: "ms" },
    ApiMeasure { key: "upload_direct", label: "upload, root direct", unit: "MiB/s" },
    ApiMeasure { key: "upload_gate", label: "upload, ai-worker through the gate", unit: "MiB/s" },
];

/// The API boot's script: dockerd, the enforcer with [`api_policy`], the preconditions, then
/// rounds of (round trips, `docker ps`, upload), each pair direct/gate in alternating order.
#[expect(
    clippy::format_push_string,
    reason = "the script is built line by line; `write!` would add an infallible `fmt::Result` to every line, and one allocation per line does not matter here"
)]
pub fn api_script(config: &Config) -> String {
    let gate_env = format!("env DOCKER_HOST=unix://{API_GATE}");
    let mut s = format!(
        "start_dockerd\n\
         start_enforcer --config {API_POLICY}\n\
         step api-gate-ps ai-worker {gate_env} docker ps\n\
         step api-direct-ps bob docker ps\n\
         step api-real-refused ai-worker docker ps\n\
         step api-gate-rtt ai-worker api-load {API_GATE} 1 3 {API_PATH}\n\
         step api-gate-upload ai-worker api-load upload {API_GATE} 1 '{API_UPLOAD_PATH}'\n"
    );
    let (n, ps, mib) = (config.api_requests, config.ps_iterations, config.upload_mib);
    let io_mib = mib.div_ceil(4);
    for round in 1..=config.api_rounds {
        s.push_str(&format!("echo \"bench: API round {round} of {}\"\n", config.api_rounds));
        let pairs = [
            (
                format!("step r{round}-rtt_direct root api-load --all {API_DIRECT} 1 {n} {API_PATH}"),
                format!("step r{round}-rtt_gate ai-worker api-load --all {API_GATE} 1 {n} {API_PATH}"),
            ),
            (
                format!("step r{round}-ps_direct bob {BENCH_EXEC} times {ps} 1 /usr/bin/docker docker ps"),
                format!(
                    "step r{round}-ps_gate ai-worker {gate_env} {BENCH_EXEC} times {ps} 1 /usr/bin/docker docker ps"
                ),
            ),
            (
                format!(
                    "step r{round}-upload_direct root api-load upload {API_DIRECT} {mib} '{API_UPLOAD_PATH}'"
                ),
                format!(
                    "step r{round}-upload_gate ai-worker api-load upload {API_GATE} {mib} '{API_UPLOAD_PATH}'"
                ),
            ),
        ];
        for (direct, gate) in pairs {
            // Odd rounds direct first, even rounds the gate first.
            let (first, second) = if round % 2 == 1 { (direct, gate) } else { (gate, direct) };
            s.push_str(&format!("{first}\n{second}\n"));
        }
        s.push_str(&format!(
            "step r{round}-ps_root root {BENCH_EXEC} times {ps} 1 /usr/bin/docker docker ps\n"
        ));
    }
    s.push_str(&format!(
        // The gate's own system calls (/proc/PID/io of the daemon) over one more gate run
        // of each: bytes per read and write, calls per request.
        "step api-io-0 root cat /proc/$ENFORCER_PID/io\n\
         step api-io-rtt ai-worker api-load {API_GATE} 1 {n} {API_PATH}\n\
         step api-io-1 root cat /proc/$ENFORCER_PID/io\n\
         step api-io-upload ai-worker api-load upload {API_GATE} {io_mib} '{API_UPLOAD_PATH}'\n\
         step api-io-2 root cat /proc/$ENFORCER_PID/io\n\
         step api-mem root {BENCH_EXEC} mem $ENFORCER_PID\n\
         step api-status root /usr/local/sbin/enforcer status --json --limit 0\n"
    ));
    s
}

/// A run's samples: per round, every sample (µs per round trip, ms per `docker ps`, one
/// MiB/s per upload).
#[derive(Debug, Default, Clone)]
pub struct ApiMeasured {
    pub samples: Vec<(&'static str, Vec<Vec<f64>>)>,
    pub rss_kib: f64,
    pub hwm_kib: f64,
    /// The gate's refusals during the boot (`counters.api_refused`): 0 when the bench
    /// measured admitted requests only.
    pub api_refused: f64,
    /// The daemon's system calls during one more gate run of `api_requests` round trips
    /// and one of a quarter-size upload: (what, read calls, write calls, bytes read,
    /// bytes written), from /proc/PID/io.
    pub io: Vec<(&'static str, [f64; 4])>,
}

/// The `p`th percentile of sorted values (as api-load computes it).
fn percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// One side of a comparison: every sample pooled, and each round's median.
#[derive(Debug, Clone, Copy)]
pub struct Pooled {
    pub median: f64,
    pub p99: f64,
    pub mean: f64,
    pub samples: usize,
}

impl Pooled {
    fn of(rounds: &[Vec<f64>]) -> Option<Pooled> {
        let mut all: Vec<f64> = rounds.iter().flatten().copied().filter(|v| v.is_finite()).collect();
        if all.is_empty() {
            return None;
        }
        all.sort_by(f64::total_cmp);
        #[expect(clippy::cast_precision_loss, reason = "a sample count")]
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        Some(Pooled { median: Stats::of(&all)?.median, p99: percentile(&all, 99), mean, samples: all.len() })
    }
}

impl ApiMeasured {
    fn from_report(report: &Report, config: &Config) -> Result<ApiMeasured> {
        let step = |name: &str| -> Result<&str> {
            let (rc, out) = report.step(name).ok_or_else(|| anyhow!("API step {name} did not run"))?;
            if *rc != 0 {
                bail!("API step {name} exited {rc}: {out}");
            }
            Ok(out.as_str())
        };
        step("dockerd-start")?;
        step("enforcer-start")?;
        step("api-gate-ps").context("docker ps through the gate")?;
        step("api-direct-ps").context("bob's docker ps on dockerd's socket")?;
        match report.step("api-real-refused") {
            Some((rc, out)) if *rc != 0 && out.contains("permission denied") => {}
            other => bail!("ai-worker's docker reached dockerd's socket: the gate is not on ({other:?})"),
        }
        let mut m = ApiMeasured::default();
        for measure in API_MEASURES {
            let mut rounds = Vec::new();
            for round in 1..=config.api_rounds {
                let name = format!("r{round}-{}", measure.key);
                let out = step(&name)?;
                rounds.push(api_samples(measure.key, out).with_context(|| format!("step {name}: {out}"))?);
            }
            m.samples.push((measure.key, rounds));
        }
        let mem = step("api-mem")?;
        m.rss_kib = field(mem, "rss_kib").context("no rss_kib")?;
        m.hwm_kib = field(mem, "hwm_kib").context("no hwm_kib")?;
        let status: Value =
            serde_json::from_str(step("api-status")?).context("enforcer status --json is not JSON")?;
        m.api_refused = status["counters"]["api_refused"].as_f64().unwrap_or(f64::NAN);
        let io = |name: &str| -> Option<[f64; 4]> {
            let text = report.step(name)?.1.as_str();
            let get = |key: &str| {
                text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse::<f64>().ok())
            };
            Some([get("syscr:")?, get("syscw:")?, get("rchar:")?, get("wchar:")?])
        };
        if let (Some(a), Some(b), Some(c)) = (io("api-io-0"), io("api-io-1"), io("api-io-2")) {
            m.io.push(("round trips", std::array::from_fn(|i| b[i] - a[i])));
            m.io.push(("upload", std::array::from_fn(|i| c[i] - b[i])));
        }
        Ok(m)
    }

    fn rounds(&self, key: &str) -> &[Vec<f64>] {
        self.samples.iter().find(|(k, _)| *k == key).map(|(_, r)| r.as_slice()).unwrap_or_default()
    }

    fn pooled(&self, key: &str) -> Option<Pooled> {
        Pooled::of(self.rounds(key))
    }

    /// Each round's median.
    fn round_medians(&self, key: &str) -> Vec<f64> {
        self.rounds(key).iter().filter_map(|r| Stats::of(r).map(|s| s.median)).collect()
    }
}

/// The samples of one API step's output, in the figure's unit.
fn api_samples(key: &str, out: &str) -> Result<Vec<f64>> {
    let list = |name: &str| -> Result<Vec<f64>> {
        let text = fields(out).find(|(k, _)| *k == name).map(|(_, v)| v).context(format!("no {name}="))?;
        text.split(',').map(|v| v.parse::<f64>().map_err(|e| anyhow!("{name}: {e}"))).collect()
    };
    if key.starts_with("rtt_") {
        let requests = field(out, "requests").context("no requests=")?;
        if field(out, "ok") != Some(requests) {
            bail!("not every round trip was answered 2xx");
        }
        // The first request of a run also opened the connection.
        let mut all = list("all_us")?;
        if all.len() > 1 {
            all.remove(0);
        }
        Ok(all)
    } else if key.starts_with("ps_") {
        if field(out, "failed") != Some(0.0) {
            bail!("a docker ps failed");
        }
        Ok(list("ns")?.into_iter().map(|ns| ns / 1e6).collect())
    } else {
        if field(out, "ok") != Some(1.0) {
            bail!("the upload was not built");
        }
        Ok(vec![field(out, "mib_s").context("no mib_s=")?])
    }
}

/// The API gate's targets (issue 14): gate / direct, both from this boot.
fn api_verdicts(api: &ApiMeasured) -> Vec<Verdict> {
    let mut out = Vec::new();
    for (name, what, limit) in [
        ("API: docker ps end to end, gate / direct (bob)", "ps", 1.03),
        ("API: GET /containers/json round trip, gate / direct", "rtt", 1.5),
    ] {
        let (gate, direct) = (format!("{what}_gate"), format!("{what}_direct"));
        let (Some(g), Some(d)) = (api.pooled(&gate), api.pooled(&direct)) else { continue };
        let r = g.median / d.median;
        let per_round: Vec<f64> =
            api.round_medians(&gate).iter().zip(api.round_medians(&direct)).map(|(a, b)| a / b).collect();
        let spread = Stats::of(&per_round)
            .map(|s| format!("; rounds {:.3} to {:.3}", s.min, s.max))
            .unwrap_or_default();
        out.push(Verdict {
            name: name.to_string(),
            measured: format!("median {r:.3}, p99 {:.3}, mean {:.3}{spread}", g.p99 / d.p99, g.mean / d.mean),
            target: format!("median <= {limit:.2}"),
            met: r <= limit,
            value: r,
            per_round,
        });
    }
    let (gate, direct) = (api.round_medians("upload_gate"), api.round_medians("upload_direct"));
    if let (Some(g), Some(d)) = (Stats::of(&gate), Stats::of(&direct)) {
        let r = g.median / d.median;
        let per_round: Vec<f64> = gate.iter().zip(&direct).map(|(a, b)| a / b).collect();
        out.push(Verdict {
            name: "API: build-context upload, gate / direct".to_string(),
            measured: format!("{r:.3} ({:.1} vs {:.1} MiB/s)", g.median, d.median),
            target: ">= 0.90".to_string(),
            met: r >= 0.90,
            value: r,
            per_round,
        });
    }
    out
}

fn api_json(config: &Config, api: &ApiMeasured) -> Value {
    let mut figures = serde_json::Map::new();
    for measure in API_MEASURES {
        let rounds = api.rounds(measure.key);
        let Some(p) = Pooled::of(rounds) else { continue };
        figures.insert(
            measure.key.to_string(),
            json!({
                "label": measure.label, "unit": measure.unit,
                "median": p.median, "p99": p.p99, "mean": p.mean, "samples": p.samples,
                "round_medians": api.round_medians(measure.key),
                "runs": rounds,
            }),
        );
    }
    json!({
        "rounds": config.api_rounds,
        "round_trips_per_run": config.api_requests,
        "ps_per_run": config.ps_iterations,
        "upload_mib": config.upload_mib,
        "upload_endpoint": API_UPLOAD_PATH,
        "policy": api_policy(),
        "figures": figures,
        "daemon_rss_kib_after": api.rss_kib,
        "daemon_hwm_kib_after": api.hwm_kib,
        "api_refused": if api.api_refused.is_finite() { json!(api.api_refused) } else { Value::Null },
        "gate_syscalls": api.io.iter().map(|(what, [r, w, rb, wb])| json!({
            "run": what, "read_calls": r, "write_calls": w, "bytes_read": rb, "bytes_written": wb,
        })).collect::<Vec<_>>(),
    })
}

#[expect(
    clippy::format_push_string,
    reason = "the table is built line by line; `write!` would add an infallible `fmt::Result` to every line, and one allocation per line does not matter here"
)]
fn api_table(t: &mut String, config: &Config, api: &ApiMeasured) {
    t.push_str(&format!(
        "\nAPI gate (real dockerd), {} rounds: {} round trips, {} docker ps, one {} MiB upload per run and side\n",
        config.api_rounds, config.api_requests, config.ps_iterations, config.upload_mib
    ));
    t.push_str(&format!(
        "{:<52} {:>10} {:>10} {:>10} {:>23}\n",
        "", "median", "p99", "mean", "round medians [min - max]"
    ));
    for measure in API_MEASURES {
        let Some(p) = api.pooled(measure.key) else { continue };
        let rounds = Stats::of(&api.round_medians(measure.key))
            .map(|s| format!("[{:.1} - {:.1}]", s.min, s.max))
            .unwrap_or_default();
        t.push_str(&format!(
            "{:<52} {:>10.1} {:>10.1} {:>10.1} {:>23}\n",
            format!("{} ({})", measure.label, measure.unit),
            p.median,
            p.p99,
            p.mean,
            rounds
        ));
    }
    // /proc/PID/io counts write(2)-family calls on sockets, not tokio's recv(2) reads.
    for (what, [_, writes, _, written]) in &api.io {
        t.push_str(&format!(
            "    the gate's socket writes, one more {what} run: {writes:.0} ({:.0} B each)\n",
            written / writes.max(1.0)
        ));
    }
    t.push_str(&format!(
        "{:<52} {:>10.1}\n{:<52} {:>10.1}\n",
        "    daemon RSS after the API boot (MiB)",
        api.rss_kib / 1024.0,
        "    daemon peak RSS (MiB)",
        api.hwm_kib / 1024.0
    ));
}

/// The API boot's own files, appended after the base and docker archives.
fn api_archive(bench_exec: &Path, config: &Config) -> Result<Archive> {
    let mut archive = Archive::new();
    vm::add_binary(&mut archive, BENCH_EXEC, bench_exec)?;
    archive.file(API_POLICY, 0o644, api_policy().as_bytes());
    archive.file("scenario.sh", 0o644, api_script(config).as_bytes());
    Ok(archive)
}

/// Boots `kernel` once with the real dockerd and measures the gate.
fn run_api(
    kernel: &Kernel,
    initrds: (&Path, &Path),
    bench_exec: &Path,
    work: &Path,
    config: &Config,
) -> Result<ApiMeasured> {
    let dir: PathBuf = work.join(&kernel.label).join("api");
    std::fs::create_dir_all(&dir)?;
    let scenario = dir.join("bench-api.cpio");
    api_archive(bench_exec, config)?.write_to(&scenario)?;
    let report = vm::boot_with(
        &Boot {
            kernel,
            initrds: vec![initrds.0.to_path_buf(), initrds.1.to_path_buf(), scenario],
            lsm: vm::DEFAULT_LSM,
            timeout: Duration::from_hours(1),
            work: dir.clone(),
            echo: true,
        },
        if config.icount { ICOUNT_ARGS } else { &[] },
    )?;
    if !report.done {
        bail!("the API bench did not run to its end; console in {}", dir.join("console.log").display());
    }
    ApiMeasured::from_report(&report, config)
        .with_context(|| format!("console in {}", dir.join("console.log").display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_elf_is_a_static_x86_64_executable_that_exits_0() {
        let elf = tiny_elf();
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(elf.len(), 64 + 56 + 9);
        assert_eq!(u16::from_le_bytes([elf[16], elf[17]]), 2, "ET_EXEC");
        assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), 0x3e, "x86_64");
        let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
        assert_eq!(entry, 0x40_0000 + 120);
        let filesz = u64::from_le_bytes(elf[64 + 32..64 + 40].try_into().unwrap());
        assert_eq!(filesz, elf.len() as u64);
        // The host runs it: it is a real program, not just a well-formed header.
        let path = std::env::temp_dir().join(format!("enforcer-tiny-elf-{}", std::process::id()));
        std::fs::write(&path, &elf).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let status = std::process::Command::new(&path).status();
        std::fs::remove_file(&path).unwrap();
        assert!(status.unwrap().success());
    }

    #[test]
    fn stub_argv_has_20_global_options_then_the_command() {
        let argv = stub_argv();
        assert_eq!(GLOBAL_OPTIONS.len(), 20);
        assert_eq!(argv.first().map(String::as_str), Some("docker"));
        assert_eq!(argv.last().map(String::as_str), Some(STUB_COMMAND));
        assert!(argv.len() < 64, "within the engine's argument limit");
        // Words go through the VM shell unquoted.
        assert!(argv.iter().all(|a| !a.is_empty() && !a.contains([' ', '\'', '"', '*', '?', '$'])));
    }

    #[test]
    fn stats_median_min_max() {
        assert_eq!(Stats::of(&[3.0, 1.0, 2.0]), Some(Stats { median: 2.0, min: 1.0, max: 3.0 }));
        assert_eq!(Stats::of(&[4.0, 1.0, 2.0, 3.0]), Some(Stats { median: 2.5, min: 1.0, max: 4.0 }));
        assert_eq!(Stats::of(&[f64::NAN, 5.0]), Some(Stats { median: 5.0, min: 5.0, max: 5.0 }));
        assert_eq!(Stats::of(&[]), None);
    }

    #[test]
    fn helper_output_parsing() {
        assert_eq!(field("execs=5000 failed=0 ns=123456789", "ns"), Some(123456789.0));
        assert_eq!(field("pid=42 ready_ns=7", "pid"), Some(42.0));
        assert_eq!(field("x", "ns"), None);
        let log = "enforcer: [   49.6 ms] policy parsed and resolved\nenforcer: enforcing after 960 ms (fresh pins): x\n";
        assert_eq!(stages(log), vec![("policy parsed and resolved".to_string(), 49.6)]);
        let verify = "kernel 6.1.0\nenforcer_bprm: verified, 15615 instructions processed\nenforcer_fopen: verified, 92 instructions processed\n";
        assert_eq!(
            verifier_counts(verify),
            vec![("enforcer_bprm".into(), 15615), ("enforcer_fopen".into(), 92)]
        );
    }

    /// A made-up boot: the JSON has every figure with median/min/max and the verdicts.
    fn sample() -> Measured {
        let runs = |base: f64| vec![base, base * 1.02, base * 0.99];
        Measured {
            per_exec_ns: vec![
                ("tiny_bare", runs(100_000.0)),
                ("stub_bare", runs(110_000.0)),
                ("wrapper", runs(2_000_000.0)),
                ("tiny_unrestricted", runs(100_500.0)),
                ("tiny_restricted", runs(100_800.0)),
                ("stub_enforced", runs(112_000.0)),
            ],
            startup_ms: vec![900.0, 850.0, 950.0],
            startup_internal_ms: vec![800.0, 790.0, 810.0],
            rss_kib: vec![10_000.0, 10_100.0, 9_900.0],
            hwm_kib: vec![29_000.0; 3],
            stages: vec![("policy parsed and resolved".into(), 50.0)],
            verifier: vec![("enforcer_bprm".into(), 15615)],
            checked: vec![5250.0; 3],
            hook_ns: vec![
                ("tiny_unrestricted", vec![300.0, 310.0, 290.0]),
                ("stub_enforced", vec![4_000.0; 3]),
            ],
            check_output: "verdict: allow".into(),
            api: None,
        }
    }

    #[test]
    fn verdicts_and_json_shape() {
        let m = sample();
        let verdicts = verdicts(&m);
        let met: Vec<bool> = verdicts.iter().map(|v| v.met).collect();
        // (2) +0.5%, (3) +0.8%, (4) +1.8%; by the hooks' run time (2) 0.3%, (4) 3.6%;
        // wrapper 1,890 us vs 2 us, start-up 900 ms, 9.9 MiB.
        assert_eq!(met, [true, true, true, true, false, true, true, false]);
        assert!((verdicts[3].value - 945.0).abs() < 1e-6);
        let kernel = Kernel { label: "6.1".into(), release: "6.1.0-test".into(), root: PathBuf::new() };
        let config = Config { rounds: 3, iterations: 5000, wrapper_iterations: 500, ..Config::default() };
        let json = to_json(&kernel, &config, &m);
        assert_eq!(json["kernel"], "6.1");
        assert!(json["clock"].as_str().unwrap().contains("icount"));
        for key in
            ["tiny_bare", "stub_bare", "wrapper", "tiny_unrestricted", "tiny_restricted", "stub_enforced"]
        {
            let figure = &json["figures"][key];
            assert!(figure["median"].is_f64() && figure["min"].is_f64() && figure["max"].is_f64(), "{key}");
            assert_eq!(figure["runs"].as_array().unwrap().len(), 3);
        }
        assert_eq!(json["figures"]["wrapper"]["iterations_per_run"], 500);
        assert_eq!(json["startup_ms"]["median"], 900.0);
        assert_eq!(json["verifier_instructions"]["enforcer_bprm"], 15615);
        assert_eq!(json["targets"].as_array().unwrap().len(), 8);
        assert_eq!(json["hook_run_time_ns_per_exec"]["tiny_unrestricted"]["median"], 300.0);
        assert_eq!(json["targets"][4]["met"], false);
        let table = table(&kernel, &config, &m);
        assert!(table.contains("MISS") && table.contains("(4) docker stub"), "{table}");
    }

    #[test]
    fn an_unmeasurable_hook_cost_still_compares() {
        let mut m = sample();
        m.per_exec_ns[5].1 = vec![109_000.0; 3];
        let wrapper = &verdicts(&m)[3];
        assert!(wrapper.met && wrapper.value.is_infinite());
        assert!(
            to_json(
                &Kernel { label: "x".into(), release: "y".into(), root: PathBuf::new() },
                &Config { rounds: 3, iterations: 1, wrapper_iterations: 1, ..Config::default() },
                &m
            )["targets"][3]["value"]
                .is_null()
        );
    }

    #[test]
    fn script_interleaves_rounds() {
        let s = script(&Config { rounds: 2, iterations: 5000, wrapper_iterations: 300, ..Config::default() });
        let position = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle} missing"));
        assert!(position("step r1-tiny_bare") < position("step r1-start"));
        assert!(position("step r1-start") < position("step r1-stub_enforced"));
        assert!(position("step r1-stop") < position("step r2-start"));
        assert!(position("step r2-stop") < position("step r2-tiny_bare"));
        assert!(s.contains("loop 300 15 /opt/bench/wrapper/docker docker -D --debug"));
        assert!(s.contains("loop 5000 250 /usr/local/bin/bench-true bench-true"));
        // The hooks' run time is read before and after each enforced configuration.
        assert!(position("step r1-hooks-start") < position("step r1-tiny_unrestricted "));
        assert!(position("step r1-tiny_unrestricted ") < position("step r1-tiny_unrestricted-hooks"));
        assert!(s.contains("echo 1 > /proc/sys/kernel/bpf_stats_enabled"));
    }

    #[test]
    fn program_totals_sum_every_program() {
        let status = r#"{"programs":[{"name":"enforcer_bprm","run_count":10,"run_time_ns":1000},
            {"name":"enforcer_commit","run_count":10,"run_time_ns":500}]}"#;
        assert_eq!(program_totals(status).unwrap(), (10.0, 1500.0));
        assert!(program_totals(r#"{"programs":[]}"#).is_err());
    }

    /// The API boot's script: the preconditions first, then per round every pair, direct
    /// first in odd rounds and the gate first in even ones.
    #[test]
    fn api_script_interleaves_direct_and_gate() {
        let config =
            Config { api_rounds: 2, api_requests: 50, ps_iterations: 4, upload_mib: 8, ..Config::default() };
        let s = api_script(&config);
        let position = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle} missing in {s}"));
        assert!(position("start_dockerd") < position("start_enforcer --config /etc/enforcer/bench-api.toml"));
        assert!(position("step api-real-refused ai-worker docker ps") < position("step r1-rtt_direct"));
        for what in ["rtt", "ps", "upload"] {
            assert!(
                position(&format!("step r1-{what}_direct ")) < position(&format!("step r1-{what}_gate "))
            );
            assert!(
                position(&format!("step r2-{what}_gate ")) < position(&format!("step r2-{what}_direct "))
            );
        }
        assert!(s.contains(
            "step r1-rtt_gate ai-worker api-load --all /run/enforcer/gate/bench-gate.sock 1 50 /v1.41/containers/json"
        ));
        assert!(
            s.contains("step r1-rtt_direct root api-load --all /run/docker.sock 1 50 /v1.41/containers/json")
        );
        assert!(s.contains(
            "step r2-ps_gate ai-worker env DOCKER_HOST=unix:///run/enforcer/gate/bench-gate.sock /usr/local/bin/bench-exec times 4 1 /usr/bin/docker docker ps"
        ));
        assert!(
            s.contains("step r2-ps_direct bob /usr/local/bin/bench-exec times 4 1 /usr/bin/docker docker ps")
        );
        assert!(s.contains("step r1-upload_gate ai-worker api-load upload /run/enforcer/gate/bench-gate.sock 8 '/v1.41/build?q=1'"));
        assert!(!s.contains("step r3-"));
    }

    /// The policy gates ai-worker (any client) and restricts bob by the same list without
    /// the gate: it parses as a policy, and the two rules differ only there.
    #[test]
    fn api_policy_gates_ai_worker_only() {
        let policy: toml::Value = toml::from_str(&api_policy()).unwrap();
        let rules = policy["rule"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0]["users"][0].as_str(), Some("ai-worker"));
        assert_eq!(rules[0]["api_gate"].as_bool(), Some(true));
        assert_eq!(rules[0]["api_clients"].as_str(), Some("any"));
        assert_eq!(rules[1]["users"][0].as_str(), Some("bob"));
        assert_eq!(rules[1]["api_gate"].as_bool(), Some(false), "bob opts out");
        assert_eq!(rules[0]["deny"], rules[1]["deny"]);
        assert_eq!(format!("/run/enforcer/gate/{}.sock", rules[0]["name"].as_str().unwrap()), API_GATE);
    }

    #[test]
    fn api_samples_parse_each_helper() {
        // api-load --all: the first request (it opened the connection) is dropped.
        let rtt = api_samples(
            "rtt_gate",
            "requests=4 ok=4 refused=0 other=0 errors=0 p50_us=2 p99_us=9 mean_us=3 all_us=900,2,3,4",
        )
        .unwrap();
        assert_eq!(rtt, vec![2.0, 3.0, 4.0]);
        assert!(api_samples("rtt_gate", "requests=4 ok=3 refused=1 all_us=1,2,3,4").is_err());
        let ps = api_samples("ps_direct", "runs=2 failed=0 ns=1500000,2500000").unwrap();
        assert_eq!(ps, vec![1.5, 2.5]);
        assert!(api_samples("ps_direct", "runs=2 failed=1 ns=1,2").is_err());
        let up =
            api_samples("upload_gate", "bytes=1 status=200 ok=1 headers_ns=5 ns=9 mib_s=123.50").unwrap();
        assert_eq!(up, vec![123.5]);
        assert!(api_samples("upload_gate", "bytes=1 status=500 ok=0 ns=9 mib_s=1.0").is_err());
    }

    fn api_sample() -> ApiMeasured {
        let rounds = |base: f64, tail: f64| vec![vec![base, base, base, base * 1.01, tail]; 3];
        ApiMeasured {
            samples: vec![
                ("rtt_direct", rounds(1000.0, 2000.0)),
                ("rtt_gate", rounds(1400.0, 3500.0)),
                ("ps_direct", rounds(300.0, 330.0)),
                ("ps_gate", rounds(312.0, 340.0)),
                ("ps_root", rounds(290.0, 300.0)),
                ("upload_direct", vec![vec![100.0], vec![110.0], vec![90.0]]),
                ("upload_gate", vec![vec![95.0], vec![99.0], vec![80.0]]),
            ],
            rss_kib: 12_000.0,
            hwm_kib: 30_000.0,
            api_refused: 0.0,
            io: vec![("upload", [100.0, 50.0, 6_553_600.0, 6_553_600.0])],
        }
    }

    #[test]
    fn api_verdicts_are_ratios_of_pooled_medians() {
        let api = api_sample();
        let v = api_verdicts(&api);
        assert_eq!(v.len(), 3);
        // ps: 312 / 300 = 1.04 > 1.03; round trip 1.4 <= 1.5; upload 95 / 100 >= 0.9.
        assert!((v[0].value - 1.04).abs() < 1e-9 && !v[0].met, "{v:?}");
        assert!((v[1].value - 1.4).abs() < 1e-9 && v[1].met, "{v:?}");
        assert!(v[1].measured.contains("p99 1.750"), "{}", v[1].measured);
        assert!((v[2].value - 0.95).abs() < 1e-9 && v[2].met, "{v:?}");
        assert_eq!(v[2].per_round.len(), 3);
        let p = api.pooled("rtt_gate").unwrap();
        assert_eq!((p.median, p.p99, p.samples), (1400.0, 3500.0, 15));
    }

    #[test]
    fn api_figures_in_json_table_and_targets() {
        let mut m = sample();
        m.api = Some(api_sample());
        let kernel = Kernel { label: "6.12".into(), release: "6.12-test".into(), root: PathBuf::new() };
        let config = Config { api_rounds: 3, ..Config::default() };
        let json = to_json(&kernel, &config, &m);
        assert_eq!(json["targets"].as_array().unwrap().len(), 11);
        assert_eq!(json["api_gate"]["figures"]["rtt_gate"]["median"], 1400.0);
        assert_eq!(json["api_gate"]["figures"]["upload_gate"]["round_medians"].as_array().unwrap().len(), 3);
        assert_eq!(json["api_gate"]["upload_mib"], 200);
        let table = table(&kernel, &config, &m);
        assert!(table.contains("docker ps, ai-worker through the gate"), "{table}");
        assert!(table.contains("API: docker ps end to end"), "{table}");
        assert!(table.contains("one more upload run: 50 (131072 B each)"), "{table}");
        assert_eq!(json["api_gate"]["gate_syscalls"][0]["read_calls"], 100.0);
        // The API boot alone: no exec figures, no exec verdicts.
        let only = Measured { api: Some(api_sample()), ..Measured::default() };
        assert_eq!(verdicts(&only).len(), 3);
        assert!(!table_has_exec(&super::table(&kernel, &config, &only)));
        assert!(to_json(&kernel, &config, &Measured::default())["api_gate"].is_null());
    }

    fn table_has_exec(table: &str) -> bool {
        table.contains("exec (fork+execve+waitpid)")
    }
}
