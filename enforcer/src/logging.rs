//! Diagnostics through the `log` facade: journald's native protocol when stderr is the
//! journal (a systemd unit), else `enforcer: …` lines on stderr.
//!
//! Priorities, as syslog names them and `journalctl -p` filters them:
//!
//! | priority    | logged with        | for                                                      |
//! |-------------|--------------------|----------------------------------------------------------|
//! | err (3)     | `log::error!`      | a failure: start-up, a reload, a record not written      |
//! | warning (4) | `log::warn!`       | a degraded state: a policy warning, a short event, …     |
//! | notice (5)  | [`denial`]         | a denial (or an audited exec): enforcement at work       |
//! | info (6)    | `log::info!`       | lifecycle: enforcing, reloaded, stopping                 |
//! | debug (7)   | `log::debug!`      | `enforcer run -v`: start-up stages and their durations   |
//!
//! So `journalctl -u enforcer -p err` lists failures only, `-p warning` adds degraded states
//! and `-p notice` the denials. A denial's journal entry also carries its record's fields as
//! `ENFORCER_*` fields (`journalctl -u enforcer ENFORCER_USER=ai-worker`).
//!
//! The journal's `MESSAGE` is the very line stderr would get, so what reads or greps the
//! text (people, scripts, the VM tests) finds it in either place.

use std::{fmt, io::Write as _};

use log::{Level, LevelFilter, Log, Metadata, Record};
use systemd_journal_logger::JournalLog;

use crate::events::Denial;

/// The target of denial records: what gives them their own priority.
pub const DENIAL_TARGET: &str = "enforcer::denial";

/// A syslog priority (the journal's `PRIORITY=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Err = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

/// The priority of a record at `level` for `target` (the table in the module's doc).
pub fn priority(level: Level, target: &str) -> Priority {
    match level {
        Level::Error => Priority::Err,
        Level::Warn => Priority::Warning,
        Level::Info if target == DENIAL_TARGET => Priority::Notice,
        Level::Info => Priority::Info,
        Level::Debug | Level::Trace => Priority::Debug,
    }
}

impl Priority {
    /// The level that systemd-journal-logger sends as this priority: it maps levels to
    /// priorities by a fixed table (Error 3, Warn 4, Info 5, Debug 6, Trace 7), one step
    /// off ours from Info on.
    fn journal_level(self) -> Level {
        match self {
            Priority::Err => Level::Error,
            Priority::Warning => Level::Warn,
            Priority::Notice => Level::Info,
            Priority::Info => Level::Debug,
            Priority::Debug => Level::Trace,
        }
    }
}

/// The stderr line (and the journal's `MESSAGE`): `enforcer: error: …`, `enforcer:
/// warning: …`, or `enforcer: …`.
pub fn line(priority: Priority, message: &fmt::Arguments) -> String {
    match priority {
        Priority::Err => format!("enforcer: error: {message}"),
        Priority::Warning => format!("enforcer: warning: {message}"),
        Priority::Notice | Priority::Info | Priority::Debug => format!("enforcer: {message}"),
    }
}

/// A denial's journal fields: each field of its JSON record (`status --json`, the denial
/// log) as `ENFORCER_<NAME>`, so the two name the same things and a new field reaches the
/// journal too. Absent fields are left out; a list (argv) is its JSON text.
pub fn journal_fields(denial: &Denial) -> Vec<(String, String)> {
    let Ok(serde_json::Value::Object(record)) = serde_json::to_value(denial) else {
        return Vec::new();
    };
    record
        .into_iter()
        .filter_map(|(name, value)| {
            let value = match value {
                serde_json::Value::Null => return None,
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            };
            Some((format!("ENFORCER_{}", name.to_ascii_uppercase()), value))
        })
        .collect()
}

/// Logs one denial: notice priority, its fields as journal fields.
pub fn denial(denial: &Denial) {
    let fields = journal_fields(denial);
    log::logger().log(
        &Record::builder()
            .level(Level::Info)
            .target(DENIAL_TARGET)
            .module_path_static(Some(module_path!()))
            .file_static(Some(file!()))
            .line(Some(line!()))
            .key_values(&fields)
            .args(format_args!("{}", denial.message()))
            .build(),
    );
}

struct Logger {
    /// Set when stderr is the journal's stream and journald's socket answered.
    journal: Option<JournalLog>,
}

/// Only this crate's records: aya logs through `log` too, and its messages never reached
/// stderr before (no logger was installed).
fn ours(target: &str) -> bool {
    target == "enforcer" || target.starts_with("enforcer::")
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level() && ours(metadata.target())
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let priority = priority(record.level(), record.target());
        let line = line(priority, record.args());
        if let Some(journal) = &self.journal {
            let sent = journal.journal_send(
                &Record::builder()
                    .level(priority.journal_level())
                    .target(record.target())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .key_values(record.key_values())
                    .args(format_args!("{line}"))
                    .build(),
            );
            if sent.is_ok() {
                return;
            }
        }
        // Not under the journal, or journald refused the entry: stderr (which is the
        // journal's stream in the second case), so that no message is lost.
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    fn flush(&self) {}
}

/// Installs the logger: info and above, debug too when `verbose`.
pub fn init(verbose: bool) {
    let journal = if systemd_journal_logger::connected_to_journal() { JournalLog::new().ok() } else { None };
    // Fails only when a logger is installed already, and main installs the only one.
    let _ = log::set_boxed_logger(Box::new(Logger { journal }));
    log::set_max_level(if verbose { LevelFilter::Debug } else { LevelFilter::Info });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial() -> Denial {
        Denial {
            time: "2026-12-01T20:00:00.000Z".into(),
            uid: 1001,
            user: Some("ai-worker".into()),
            pid: 4242,
            binary: Some("/usr/bin/docker".into()),
            path: "/usr/bin/docker".into(),
            argv: vec!["docker".into(), "exec".into(), "gitea".into()],
            argv_truncated: false,
            rule: "agent".into(),
            command: Some("container exec".into()),
            reason: "command".into(),
            action: "denied".into(),
            hook: "exec".into(),
            comm: "docker".into(),
            race: false,
            target: Some("/run/docker.sock".into()),
            field: None,
        }
    }

    fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
        fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_denial_becomes_journal_fields() {
        let fields = journal_fields(&denial());
        let expected = [
            ("ENFORCER_TIME", "2026-12-01T20:00:00.000Z"),
            ("ENFORCER_UID", "1001"),
            ("ENFORCER_USER", "ai-worker"),
            ("ENFORCER_PID", "4242"),
            ("ENFORCER_BINARY", "/usr/bin/docker"),
            ("ENFORCER_PATH", "/usr/bin/docker"),
            ("ENFORCER_ARGV", r#"["docker","exec","gitea"]"#),
            ("ENFORCER_ARGV_TRUNCATED", "false"),
            ("ENFORCER_RULE", "agent"),
            ("ENFORCER_COMMAND", "container exec"),
            ("ENFORCER_REASON", "command"),
            ("ENFORCER_ACTION", "denied"),
            ("ENFORCER_HOOK", "exec"),
            ("ENFORCER_COMM", "docker"),
            ("ENFORCER_RACE", "false"),
            ("ENFORCER_TARGET", "/run/docker.sock"),
        ];
        for (name, value) in expected {
            assert_eq!(field(&fields, name), Some(value), "{name} in {fields:?}");
        }
        assert_eq!(fields.len(), expected.len(), "no field unaccounted for: {fields:?}");
    }

    #[test]
    fn every_record_field_reaches_the_journal_and_absent_ones_are_left_out() {
        let full = denial();
        let serde_json::Value::Object(record) = serde_json::to_value(&full).unwrap() else { panic!() };
        let fields = journal_fields(&full);
        for name in record.keys() {
            let journal_name = format!("ENFORCER_{}", name.to_ascii_uppercase());
            assert!(field(&fields, &journal_name).is_some(), "{name} has no journal field: {fields:?}");
        }
        let sparse = Denial { user: None, binary: None, command: None, target: None, ..denial() };
        let fields = journal_fields(&sparse);
        for absent in ["ENFORCER_USER", "ENFORCER_BINARY", "ENFORCER_COMMAND", "ENFORCER_TARGET"] {
            assert_eq!(field(&fields, absent), None, "{absent} in {fields:?}");
        }
        assert_eq!(field(&fields, "ENFORCER_UID"), Some("1001"));
    }

    #[test]
    fn priorities_keep_denials_apart_from_errors_and_lifecycle() {
        assert_eq!(priority(Level::Error, "enforcer::daemon"), Priority::Err);
        assert_eq!(priority(Level::Warn, "enforcer::daemon"), Priority::Warning);
        assert_eq!(priority(Level::Info, DENIAL_TARGET), Priority::Notice);
        assert_eq!(priority(Level::Info, "enforcer::daemon"), Priority::Info);
        assert_eq!(priority(Level::Debug, "enforcer::daemon"), Priority::Debug);
        // A denial logged at error by mistake would still be an error: the level decides first.
        assert_eq!(priority(Level::Error, DENIAL_TARGET), Priority::Err);
        let numbers = [Priority::Err, Priority::Warning, Priority::Notice, Priority::Info, Priority::Debug]
            .map(|p| p as u8);
        assert_eq!(numbers, [3, 4, 5, 6, 7]);
        // systemd-journal-logger's table: Error 3, Warn 4, Info 5, Debug 6, Trace 7.
        let sent = [Priority::Err, Priority::Warning, Priority::Notice, Priority::Info, Priority::Debug]
            .map(Priority::journal_level);
        assert_eq!(sent, [Level::Error, Level::Warn, Level::Info, Level::Debug, Level::Trace]);
    }

    #[test]
    fn stderr_lines_keep_their_format() {
        let reason = "bad file";
        assert_eq!(line(Priority::Err, &format_args!("{reason}")), "enforcer: error: bad file");
        assert_eq!(line(Priority::Warning, &format_args!("short event")), "enforcer: warning: short event");
        assert_eq!(line(Priority::Info, &format_args!("reloaded: x")), "enforcer: reloaded: x");
        assert_eq!(
            line(Priority::Debug, &format_args!("[    1.0 ms] stage")),
            "enforcer: [    1.0 ms] stage"
        );
        let denial = denial();
        let denial_line = line(Priority::Notice, &format_args!("{}", denial.message()));
        assert_eq!(denial_line, denial.log_line());
        assert!(
            denial_line.starts_with("enforcer: denied hook=exec uid=1001 user=ai-worker "),
            "{denial_line}"
        );
    }

    #[test]
    fn only_this_crates_records_are_logged() {
        assert!(ours("enforcer") && ours("enforcer::daemon") && ours(DENIAL_TARGET));
        assert!(!ours("aya::bpf") && !ours("enforcer_common") && !ours("tiny_http"));
    }
}
