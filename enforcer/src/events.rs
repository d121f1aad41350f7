//! Denial records: decoding kernel events, the structured log line, the JSON log.

use std::{
    fmt::Write as _,
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use enforcer_common::{
    abi::{Action, DenialEvent, EVENT_PATH_LEN, FileId, Hook, HostKey, event_flag},
    engine::Reason,
};
use serde::{Deserialize, Serialize};

pub const DENIALS_FILE: &str = "denials.jsonl";

/// One denial, as logged and as `enforcer status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Denial {
    /// RFC 3339, UTC.
    pub time: String,
    pub uid: u32,
    pub user: Option<String>,
    pub pid: u32,
    /// The vetted binary that was executed (as the policy resolved it).
    pub binary: Option<String>,
    /// The path the caller executed.
    pub path: String,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    pub rule: String,
    /// The docker command (canonical path, e.g. `container exec`), when a rule denied it.
    pub command: Option<String>,
    /// Why: `command`, or why the engine could not decide.
    pub reason: String,
    /// `denied`; `killed` when the re-check of the kernel's argv copy refused an exec
    /// already past the point of no return; `audited` in audit mode (allowed, recorded).
    pub action: String,
    /// What was refused: `exec`, `exec-recheck`, `connect-unix`, `connect-tcp`, `ptrace`.
    #[serde(default = "default_hook")]
    pub hook: String,
    /// The acting process's command name.
    #[serde(default)]
    pub comm: String,
    /// The early check allowed what the kernel's own copy of argv denies: argv was
    /// changed in between (a race, i.e. an attack).
    #[serde(default)]
    pub race: bool,
    /// The socket (`connect-unix`), address (`connect-tcp`) or process id (`ptrace`) that
    /// the process tried to reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// For an API gate refusal (`hook` `api`): the request's field that was refused
    /// (`HostConfig.Privileged`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The record of a request an API gate refused: `target` is `METHOD PATH` as the client
/// sent it.
pub fn api_denial(rule: &str, denial: &crate::gate::ApiDenial) -> Denial {
    Denial {
        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        uid: denial.uid(),
        user: crate::users::name_of(denial.uid()),
        pid: denial.pid(),
        binary: None,
        path: String::new(),
        argv: Vec::new(),
        argv_truncated: false,
        rule: rule.to_owned(),
        command: denial.command.clone(),
        reason: denial.reason.to_owned(),
        action: "denied".into(),
        hook: "api".into(),
        comm: denial.comm().to_owned(),
        race: false,
        target: Some(format!("{} {}", denial.method, denial.path).trim().to_owned()),
        field: denial.field.clone(),
    }
}

fn default_hook() -> String {
    "exec".into()
}

fn hook_name(hook: u32) -> &'static str {
    match Hook::try_from(hook) {
        Ok(Hook::Exec) => "exec",
        Ok(Hook::ExecCommit) => "exec-recheck",
        Ok(Hook::UnixConnect) => "connect-unix",
        Ok(Hook::InetConnect) => "connect-tcp",
        Ok(Hook::Ptrace) => "ptrace",
        Ok(Hook::Prctl) => "prctl",
        Ok(Hook::InetSend) => "send-tcp",
        Err(_) => "unknown",
    }
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Wall-clock time of a `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`) timestamp.
fn wall_time(ktime_ns: u64) -> SystemTime {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    let mono_now = now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
    SystemTime::now() - Duration::from_nanos(mono_now.saturating_sub(ktime_ns))
}

/// Turns a kernel event into a record. `rule_names` and `binary_of` map indices and
/// identities back to what the policy called them.
pub fn decode(
    event: &DenialEvent,
    rule_names: &[String],
    binary_of: impl Fn(&FileId) -> Option<String>,
) -> Denial {
    let argv_len = (event.argv_len as usize).min(event.argv.len());
    let hook = Hook::try_from(event.hook);
    let target = match hook {
        Ok(Hook::UnixConnect) => Some(c_string(&event.target)).filter(|t| !t.is_empty()),
        Ok(Hook::InetConnect | Hook::InetSend) => {
            let t = &event.target;
            let mut key = HostKey {
                generation: 0,
                port: u16::from_ne_bytes([t[0], t[1]]),
                family: u16::from_ne_bytes([t[2], t[3]]),
                addr: [0; 16],
            };
            key.addr.copy_from_slice(&t[4..20]);
            Some(crate::policy::host_text(&key))
        }
        Ok(Hook::Ptrace) => Some(format!("pid {}", event.target_pid)),
        // The PR_SET_MM sub-option (13: PR_SET_MM_EXE_FILE, 14: PR_SET_MM_MAP).
        Ok(Hook::Prctl) => Some(format!("PR_SET_MM option {}", event.target_pid)),
        Ok(Hook::Exec | Hook::ExecCommit) | Err(_) => None,
    };
    let is_exec = matches!(hook, Ok(Hook::Exec | Hook::ExecCommit));
    let argv_len = if is_exec { argv_len } else { 0 };
    let bytes = &event.argv[..argv_len];
    // Each argument ends with its NUL; drop the last one so split yields no phantom "".
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    let argv: Vec<String> = if argv_len == 0 {
        Vec::new()
    } else {
        bytes
            .split(|&b| b == 0)
            .take(event.argc as usize)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect()
    };
    let reason = Reason::try_from(event.reason).ok().map_or("unknown", Reason::as_str).to_string();
    Denial {
        time: humantime::format_rfc3339_millis(wall_time(event.ktime_ns)).to_string(),
        uid: event.uid,
        user: crate::users::name_of(event.uid),
        pid: event.tgid,
        binary: binary_of(&event.file),
        path: c_string(&event.path[..EVENT_PATH_LEN]),
        argv_truncated: event.argv_truncated != 0 || (argv.len() as u32) < event.argc,
        argv,
        rule: rule_names.get(event.rule as usize).cloned().unwrap_or_else(|| format!("#{}", event.rule)),
        command: if event.reason == Reason::Command as u32 {
            crate::grammar::command_path(event.command).map(str::to_string)
        } else {
            None
        },
        reason,
        // An action this build does not know is reported as the strictest one.
        action: match Action::try_from(event.action) {
            Ok(Action::Audited) => "audited",
            Ok(Action::Killed) => "killed",
            Ok(Action::Denied) | Err(_) => "denied",
        }
        .to_string(),
        hook: hook_name(event.hook).to_string(),
        comm: c_string(&event.comm),
        race: event.hook == Hook::ExecCommit as u32
            && event.flags & event_flag::RACE != 0
            && event.flags & event_flag::DEFERRED == 0,
        target,
        field: None,
    }
}

impl Denial {
    /// The one-line structured log form, as stderr and the journal's MESSAGE have it
    /// (`logging::denial` writes it).
    #[cfg(test)]
    pub fn log_line(&self) -> String {
        format!("enforcer: {}", self.message())
    }

    /// The log line without its `enforcer: ` prefix (the logger adds it).
    pub fn message(&self) -> String {
        let mut line = format!(
            "{} hook={} uid={} user={} pid={} comm={:?} rule={:?} reason={}",
            self.action,
            self.hook,
            self.uid,
            self.user.as_deref().unwrap_or("?"),
            self.pid,
            self.comm,
            self.rule,
            self.reason
        );
        if self.race {
            line.push_str(" race=true");
        }
        if let Some(target) = &self.target {
            let _ = write!(line, " target={target:?}");
        }
        if let Some(command) = &self.command {
            let _ = write!(line, " command={command:?}");
        }
        if let Some(field) = &self.field {
            let _ = write!(line, " field={field:?}");
        }
        if self.reason == Reason::GateOnly.as_str() {
            // What the agent's environment needs where the kernel cannot route the connect.
            let _ = write!(
                line,
                " hint=\"the rule's identities reach docker through its gate: DOCKER_HOST=unix://{}\"",
                crate::gate::socket_path(&self.rule).display()
            );
        }
        if self.is_exec() {
            let _ = write!(
                line,
                " binary={} argv={}",
                self.binary.as_deref().unwrap_or(&self.path),
                serde_json::to_string(&self.argv).unwrap_or_default()
            );
        } else if let Some(binary) = &self.binary {
            let _ = write!(line, " binary={binary}");
        }
        line
    }

    /// Whether an exec check decided (else a socket or ptrace gate).
    pub fn is_exec(&self) -> bool {
        self.hook == "exec" || self.hook == "exec-recheck"
    }

    /// What was attempted, for tables: argv for an exec, else the hook, its target and
    /// the acting command.
    pub fn attempt(&self) -> String {
        if self.is_exec() {
            self.argv.join(" ")
        } else {
            format!("{} {} by {}", self.hook, self.target.as_deref().unwrap_or("?"), self.comm)
        }
    }
}

/// The JSON-lines denial log under the state directory, rotated by size:
/// `denials.jsonl` is the newest, `denials.jsonl.1` … `.N` older ones.
pub struct DenialLog {
    path: PathBuf,
    /// Rotate once the current file would grow past this many bytes.
    max_bytes: u64,
    /// Rotated files kept besides the current one.
    keep: usize,
}

/// Which records `recent` returns.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Only records at or after this time.
    pub since: Option<SystemTime>,
    /// Only records of this uid.
    pub uid: Option<u32>,
}

impl Filter {
    pub fn admits(&self, denial: &Denial) -> bool {
        if self.uid.is_some_and(|uid| uid != denial.uid) {
            return false;
        }
        match self.since {
            None => true,
            Some(since) => humantime::parse_rfc3339(&denial.time).is_ok_and(|t| t >= since),
        }
    }
}

pub const DEFAULT_LOG_MAX_BYTES: u64 = 16 * 1024 * 1024;
pub const DEFAULT_LOG_KEEP: usize = 4;

impl DenialLog {
    pub fn with_limits(state_dir: &Path, max_bytes: u64, keep: usize) -> DenialLog {
        DenialLog { path: state_dir.join(DENIALS_FILE), max_bytes: max_bytes.max(1), keep }
    }

    /// The current file (`denials.jsonl`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Shifts `.1`… up by one (dropping the oldest) and moves the current file to `.1`.
    fn rotate(&self) -> Result<()> {
        if self.keep == 0 {
            return std::fs::remove_file(&self.path)
                .with_context(|| format!("cannot remove {}", self.path.display()));
        }
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))
                    .with_context(|| format!("cannot rotate {}", from.display()))?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1))
            .with_context(|| format!("cannot rotate {}", self.path.display()))
    }

    pub fn append(&self, denial: &Denial) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut line = serde_json::to_string(denial)?;
        line.push('\n');
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if size > 0 && size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        use std::os::unix::fs::OpenOptionsExt as _;
        // Denied argv may hold secrets: the log is root's alone.
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        // One write per record, so concurrent readers never see half a line.
        file.write_all(line.as_bytes()).with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// The most recent `limit` records that pass `filter`, oldest first, across the
    /// rotated files. Lines that do not parse are skipped.
    pub fn recent(&self, limit: usize, filter: &Filter) -> Result<Vec<Denial>> {
        self.recent_in(true, limit, filter)
    }

    /// `recent` from the rotated files only (`status --follow` reads the current one itself).
    pub fn recent_rotated(&self, limit: usize, filter: &Filter) -> Result<Vec<Denial>> {
        self.recent_in(false, limit, filter)
    }

    fn recent_in(&self, current: bool, limit: usize, filter: &Filter) -> Result<Vec<Denial>> {
        let mut records = std::collections::VecDeque::new();
        let files = (1..=self.keep).rev().map(|n| self.rotated(n)).chain(current.then(|| self.path.clone()));
        for path in files {
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            };
            for line in BufReader::new(file).lines() {
                let line = line?;
                if let Ok(record) = serde_json::from_str::<Denial>(&line)
                    && filter.admits(&record)
                {
                    if records.len() == limit {
                        records.pop_front();
                    }
                    if limit > 0 {
                        records.push_back(record);
                    }
                }
            }
        }
        Ok(records.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use enforcer_common::abi::{ARG_BUF, EVENT_ARGV_LEN, EVENT_TARGET_LEN};

    fn event(argv: &[&str]) -> DenialEvent {
        let mut event = DenialEvent {
            ktime_ns: 0,
            file: FileId { dev: 8, ino: 42 },
            pid: 10,
            tgid: 10,
            uid: 1001,
            gid: 1001,
            rule: 0,
            action: Action::Denied as u32,
            reason: Reason::Command as u32,
            command: enforcer_common::grammar::node_by_path("container exec").unwrap(),
            argc: argv.len() as u32,
            argv_len: 0,
            argv_truncated: 0,
            generation: 0,
            hook: Hook::Exec as u32,
            flags: 0,
            target_pid: 0,
            _pad: 0,
            comm: *b"docker\0\0\0\0\0\0\0\0\0\0",
            path: [0; EVENT_PATH_LEN],
            target: [0; EVENT_TARGET_LEN],
            argv: [0; EVENT_ARGV_LEN + ARG_BUF],
        };
        let mut offset = 0;
        for arg in argv {
            event.argv[offset..offset + arg.len()].copy_from_slice(arg.as_bytes());
            offset += arg.len() + 1;
        }
        event.argv_len = offset as u32;
        event.path[..6].copy_from_slice(b"docker");
        event
    }

    #[test]
    fn decodes_an_event() {
        let binary_of =
            |id: &FileId| (*id == FileId { dev: 8, ino: 42 }).then(|| "/usr/bin/docker".to_string());
        let denial = decode(&event(&["docker", "exec", "", "web"]), &["r".into()], binary_of);
        assert_eq!(denial.argv, ["docker", "exec", "", "web"]);
        assert!(!denial.argv_truncated);
        assert_eq!(denial.command.as_deref(), Some("container exec"));
        assert_eq!(denial.reason, "command");
        assert_eq!(denial.rule, "r");
        assert_eq!(denial.binary.as_deref(), Some("/usr/bin/docker"));
        assert_eq!(denial.path, "docker");
        assert_eq!(denial.action, "denied");
        let line = denial.log_line();
        assert!(line.starts_with("enforcer: denied hook=exec uid=1001"), "{line}");
        assert!(line.contains("comm=\"docker\""), "{line}");
        assert_eq!(denial.hook, "exec");
        assert!(!denial.race);
        assert!(
            line.contains(
                "command=\"container exec\" binary=/usr/bin/docker argv=[\"docker\",\"exec\",\"\",\"web\"]"
            ),
            "{line}"
        );
    }

    #[test]
    fn decodes_races_and_connections() {
        let mut race = event(&["docker", "exec", "web"]);
        race.hook = Hook::ExecCommit as u32;
        race.flags = event_flag::RACE;
        race.action = Action::Killed as u32;
        let denial = decode(&race, &["r".into()], |_: &FileId| None);
        assert_eq!(
            (denial.hook.as_str(), denial.action.as_str(), denial.race),
            ("exec-recheck", "killed", true)
        );
        assert!(denial.log_line().contains(" race=true"), "{}", denial.log_line());
        race.flags = event_flag::DEFERRED;
        assert!(!decode(&race, &["r".into()], |_: &FileId| None).race);

        let mut unix = event(&[]);
        unix.hook = Hook::UnixConnect as u32;
        unix.reason = Reason::UnvettedClient as u32;
        unix.target[..20].copy_from_slice(b"/run/docker.sock\0\0\0\0");
        let denial = decode(&unix, &["r".into()], |_: &FileId| None);
        assert_eq!(denial.target.as_deref(), Some("/run/docker.sock"));
        assert_eq!(denial.attempt(), "connect-unix /run/docker.sock by docker");
        assert!(!denial.log_line().contains("argv="), "{}", denial.log_line());
        assert!(denial.argv.is_empty());
        assert!(!denial.argv_truncated, "a connect has no argv to truncate");
        assert_eq!(denial.reason, "unvetted_client");

        let mut tcp = event(&[]);
        tcp.hook = Hook::InetConnect as u32;
        let key = crate::policy::parse_host("127.0.0.1:2375").unwrap();
        tcp.target[..2].copy_from_slice(&key.port.to_ne_bytes());
        tcp.target[2..4].copy_from_slice(&key.family.to_ne_bytes());
        tcp.target[4..20].copy_from_slice(&key.addr);
        assert_eq!(decode(&tcp, &[], |_: &FileId| None).target.as_deref(), Some("127.0.0.1:2375"));

        let mut ptrace = event(&[]);
        ptrace.hook = Hook::Ptrace as u32;
        ptrace.target_pid = 77;
        let denial = decode(&ptrace, &[], |_: &FileId| None);
        assert_eq!((denial.hook.as_str(), denial.target.as_deref()), ("ptrace", Some("pid 77")));
    }

    #[test]
    fn short_log_is_marked_truncated() {
        let mut short = event(&["docker", "exec"]);
        short.argc = 5;
        let denial = decode(&short, &[], |_: &FileId| None);
        assert!(denial.argv_truncated);
        assert_eq!(denial.rule, "#0");
        assert_eq!(denial.binary, None);
    }

    #[test]
    fn log_round_trips_and_keeps_the_most_recent() {
        let dir = std::env::temp_dir().join(format!("enforcer-log-test-{}", std::process::id()));
        let log = DenialLog::with_limits(&dir, DEFAULT_LOG_MAX_BYTES, DEFAULT_LOG_KEEP);
        for pid in 0..5 {
            let mut denial = decode(&event(&["docker", "exec"]), &["r".into()], |_: &FileId| None);
            denial.pid = pid;
            log.append(&denial).unwrap();
        }
        let recent = log.recent(2, &Filter::default()).unwrap();
        assert_eq!(recent.iter().map(|d| d.pid).collect::<Vec<_>>(), [3, 4]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rotation_keeps_the_size_bound_and_the_newest_records() {
        let dir = std::env::temp_dir().join(format!("enforcer-rotate-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = DenialLog::with_limits(&dir, 2000, 2);
        let mut denial = decode(&event(&["docker", "exec"]), &["r".into()], |_: &FileId| None);
        for pid in 0..100 {
            denial.pid = pid;
            denial.uid = 1000 + pid % 2;
            log.append(&denial).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["denials.jsonl", "denials.jsonl.1", "denials.jsonl.2"]);
        for name in &names {
            let size = std::fs::metadata(dir.join(name)).unwrap().len();
            assert!(size <= 2000, "{name} is {size} bytes");
        }
        let all = log.recent(1000, &Filter::default()).unwrap();
        assert_eq!(all.last().unwrap().pid, 99, "the newest record is kept");
        let pids: Vec<u32> = all.iter().map(|d| d.pid).collect();
        assert!(pids.windows(2).all(|w| w[0] + 1 == w[1]), "oldest first, no gaps: {pids:?}");
        let odd = log.recent(3, &Filter { uid: Some(1001), since: None }).unwrap();
        assert_eq!(odd.iter().map(|d| d.pid).collect::<Vec<_>>(), [95, 97, 99]);
        let future = SystemTime::now() + Duration::from_hours(1);
        assert!(log.recent(10, &Filter { uid: None, since: Some(future) }).unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
