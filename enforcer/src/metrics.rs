//! `enforcer metrics`: the counters `status` shows, in the Prometheus text format (encoded by
//! the official `prometheus-client` crate). Read from the pinned maps at each scrape, so it
//! runs beside the daemon (which has no network) and works while the daemon is down.

use std::{
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, Result};
use prometheus_client::{
    encoding::{EncodeLabelSet, prometheus_text},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use crate::{
    events::Filter,
    exit::Unavailable,
    status::{self, Status},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    hook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgramLabels {
    program: String,
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let metric: Counter = Counter::default();
    metric.inc_by(value);
    registry.register(name, help, metric);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: bool) {
    let metric: Gauge = Gauge::default();
    metric.set(i64::from(value));
    registry.register(name, help, metric);
}

/// The text format of one snapshot. The kernel's counters are totals since the maps were
/// created (they survive daemon restarts), hence counters, not gauges.
pub fn encode(status: &Status) -> Result<String> {
    let mut registry = Registry::default();
    gauge(&mut registry, "enforcer_enforcing", "1 while the exec hook is attached", status.enforcing);
    gauge(&mut registry, "enforcer_daemon_running", "1 while the daemon answers", status.daemon.running);
    if let Some(c) = &status.counters {
        counter(
            &mut registry,
            "enforcer_exec_checks",
            "Execs of a vetted docker client by a restricted user",
            c.checked,
        );
        let verdicts = Family::<VerdictLabels, Counter>::default();
        for (verdict, value) in [
            ("allowed", c.allowed),
            ("denied", c.denied),
            ("undecidable", c.undecidable),
            ("audited", c.audited),
        ] {
            verdicts.get_or_create(&VerdictLabels { verdict }).inc_by(value);
        }
        registry.register("enforcer_exec_verdicts", "Exec decisions by verdict", verdicts);
        let refused = Family::<HookLabels, Counter>::default();
        refused.get_or_create(&HookLabels { hook: "connect" }).inc_by(c.connects_refused);
        refused.get_or_create(&HookLabels { hook: "ptrace" }).inc_by(c.tamper_refused);
        refused.get_or_create(&HookLabels { hook: "api" }).inc_by(c.api_refused);
        registry.register(
            "enforcer_refusals",
            "Connections to the docker API by unvetted clients (connect), tampering with vetted ones (ptrace, PR_SET_MM) and API requests the gates refused (api)",
            refused,
        );
        counter(
            &mut registry,
            "enforcer_gate_routed_connects",
            "Connects of gated rules' identities to a docker socket path that the kernel routed to their gate",
            c.gate_routed,
        );
        counter(
            &mut registry,
            "enforcer_scratch_busy_refusals",
            "Hooks of restricted tasks that failed closed because another program run held the CPU's scratch space",
            c.scratch_busy,
        );
        counter(
            &mut registry,
            "enforcer_recheck_kills",
            "Execs killed by the re-check on the kernel's copy of argv",
            c.killed,
        );
        counter(
            &mut registry,
            "enforcer_recheck_races",
            "Re-checks that found argv changed after the first check",
            c.races,
        );
        counter(
            &mut registry,
            "enforcer_recheck_deferred",
            "Execs decided at the re-check instead of the first check",
            c.deferred,
        );
        counter(
            &mut registry,
            "enforcer_events_dropped",
            "Denial records lost because the ring buffer was full (the denial itself still happened)",
            c.events_dropped,
        );
    }
    let rules = Family::<RuleLabels, Counter>::default();
    for rule in &status.rules {
        for (verdict, value) in
            [("denied", rule.denied), ("undecidable", rule.undecidable), ("audited", rule.audited)]
        {
            rules.get_or_create(&RuleLabels { rule: rule.name.clone(), verdict }).inc_by(value);
        }
    }
    registry.register("enforcer_rule_verdicts", "Exec decisions by rule of the policy in force", rules);
    let runs = Family::<ProgramLabels, Counter>::default();
    let time = Family::<ProgramLabels, Counter<f64>>::default();
    for program in &status.programs {
        let labels = ProgramLabels { program: program.name.clone() };
        runs.get_or_create(&labels).inc_by(program.run_count);
        #[expect(clippy::cast_precision_loss, reason = "seconds as a float, as Prometheus counts time")]
        let seconds = program.run_time_ns as f64 / 1e9;
        time.get_or_create(&labels).inc_by(seconds);
    }
    registry.register(
        "enforcer_program_runs",
        "Runs of each enforcing BPF program (counted while kernel.bpf_stats_enabled=1)",
        runs,
    );
    registry.register_with_unit(
        "enforcer_program_run",
        "Run time of each enforcing BPF program (counted while kernel.bpf_stats_enabled=1)",
        Unit::Seconds,
        time,
    );
    let mut text = String::new();
    prometheus_text::encode(&mut text, &registry).context("cannot encode the metrics")?;
    Ok(text)
}

fn snapshot(state_dir: &Path) -> Result<String> {
    encode(&status::collect(state_dir, 0, &Filter::default())?)
}

/// Writes `text` to `path` through a temporary file in the same directory and a rename, so
/// that node-exporter never reads half a file.
pub fn write_textfile(path: &Path, text: &str) -> Result<()> {
    let name = path.file_name().with_context(|| format!("--textfile {}: not a file name", path.display()))?;
    let mut temporary = name.to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary: PathBuf = path.with_file_name(temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        // node-exporter runs as its own user: the counters (no argv) are readable by all.
        .mode(0o644)
        .open(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot rename {} to {}", temporary.display(), path.display()))
}

/// Serves `GET /metrics` with the text `produce` returns, until the process is stopped.
pub fn serve(server: tiny_http::Server, produce: impl Fn() -> Result<String>) -> ExitCode {
    let content_type =
        tiny_http::Header::from_bytes("Content-Type", prometheus_text::CONTENT_TYPE).expect("a valid header");
    for request in server.incoming_requests() {
        let response = if request.url() != "/metrics" {
            tiny_http::Response::from_string("not found: the metrics are at /metrics\n").with_status_code(404)
        } else if *request.method() != tiny_http::Method::Get {
            tiny_http::Response::from_string("only GET\n").with_status_code(405)
        } else {
            match produce() {
                Ok(text) => tiny_http::Response::from_string(text).with_header(content_type.clone()),
                Err(error) => {
                    log::error!("{error:#}");
                    tiny_http::Response::from_string(format!("{error:#}\n")).with_status_code(500)
                }
            }
        };
        // A scraper that hung up is its own problem.
        let _ = request.respond(response);
    }
    ExitCode::SUCCESS
}

pub fn metrics(state_dir: &Path, listen: Option<&str>, textfile: Option<&Path>) -> Result<ExitCode> {
    if let Some(address) = listen {
        let server = tiny_http::Server::http(address)
            .map_err(|e| Unavailable(format!("--listen {address}: cannot listen there: {e}")))?;
        log::info!("serving the metrics on http://{address}/metrics");
        return Ok(serve(server, || snapshot(state_dir)));
    }
    let text = snapshot(state_dir)?;
    match textfile {
        Some(path) => write_textfile(path, &text)?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;
    use crate::status::{Counters, Daemon, ProgramStats, RuleCounters};

    fn sample() -> Status {
        Status {
            enforcing: true,
            enforcing_since: None,
            daemon: Daemon { running: false, pid: None },
            kernel: String::new(),
            lsms: String::new(),
            gate_routing: false,
            policy: None,
            counters: Some(Counters {
                checked: 10,
                allowed: 6,
                denied: 3,
                undecidable: 1,
                audited: 0,
                races: 2,
                killed: 2,
                deferred: 4,
                connects_refused: 5,
                tamper_refused: 7,
                scratch_busy: 0,
                events_dropped: 9,
                api_refused: 11,
                gate_routed: 12,
            }),
            rules: vec![RuleCounters {
                name: "ai-worker-docker".into(),
                denied: 3,
                undecidable: 1,
                audited: 0,
            }],
            programs: vec![ProgramStats {
                name: "exec_check".into(),
                run_count: 100,
                run_time_ns: 2_500_000_000,
            }],
            denials: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn text_format_has_every_counter() {
        let text = encode(&sample()).unwrap();
        for line in [
            "# TYPE enforcer_enforcing gauge",
            "enforcer_enforcing 1",
            "enforcer_daemon_running 0",
            "# TYPE enforcer_exec_checks_total counter",
            "enforcer_exec_checks_total 10",
            "enforcer_exec_verdicts_total{verdict=\"allowed\"} 6",
            "enforcer_exec_verdicts_total{verdict=\"denied\"} 3",
            "enforcer_exec_verdicts_total{verdict=\"undecidable\"} 1",
            "enforcer_refusals_total{hook=\"connect\"} 5",
            "enforcer_refusals_total{hook=\"api\"} 11",
            "enforcer_refusals_total{hook=\"ptrace\"} 7",
            "enforcer_recheck_kills_total 2",
            "enforcer_recheck_races_total 2",
            "enforcer_recheck_deferred_total 4",
            "enforcer_events_dropped_total 9",
            "enforcer_rule_verdicts_total{rule=\"ai-worker-docker\",verdict=\"denied\"} 3",
            "enforcer_program_runs_total{program=\"exec_check\"} 100",
            "enforcer_program_run_seconds_total{program=\"exec_check\"} 2.5",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        // Every sample has a HELP and a TYPE line of its family.
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "no TYPE for {name}:\n{text}");
        }
    }

    #[test]
    fn without_pins_only_the_state() {
        let mut status = sample();
        status.enforcing = false;
        status.counters = None;
        status.rules.clear();
        status.programs.clear();
        let text = encode(&status).unwrap();
        assert!(text.contains("enforcer_enforcing 0\n"), "{text}");
        assert!(!text.contains("enforcer_exec_checks_total"), "{text}");
    }

    #[test]
    fn textfile_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("enforcer-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("enforcer.prom");
        write_textfile(&path, "old 1\n").unwrap();
        write_textfile(&path, "new 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new 2\n");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["enforcer.prom"], "no temporary file left");
        assert!(write_textfile(&dir.join("missing/enforcer.prom"), "x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn get(address: std::net::SocketAddr, request: &str) -> String {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    }

    #[test]
    fn listener_serves_metrics() {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let address = server.server_addr().to_ip().unwrap();
        std::thread::spawn(move || serve(server, || encode(&sample())));
        let reply = get(address, "GET /metrics HTTP/1.0\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
        assert!(reply.contains("text/plain; version=0.0.4"), "{reply}");
        assert!(reply.contains("\r\n\r\n# HELP enforcer_enforcing"), "{reply}");
        assert!(reply.contains("enforcer_exec_checks_total 10\n"), "{reply}");
        assert!(get(address, "GET / HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 404"));
    }
}
