//! The host's judgement of one boot: named checks against its [`Report`], and the checks
//! several groups share (refused with EPERM, killed by the re-check, succeeded, …).

use std::cell::RefCell;

use crate::{report::Report, step::Step, vm::Artifacts};

/// One named check's outcome.
pub struct Check {
    pub name: String,
    pub failure: Option<String>,
}

/// Collects checks against one report.
pub struct Checks<'a> {
    pub report: &'a Report,
    pub artifacts: &'a Artifacts,
    pub results: Vec<Check>,
    /// Every step a check looked up, so that a test can hold each group's script to
    /// printing them all.
    steps_read: RefCell<Vec<Step>>,
}

impl<'a> Checks<'a> {
    pub fn new(report: &'a Report, artifacts: &'a Artifacts) -> Self {
        Checks { report, artifacts, results: Vec::new(), steps_read: RefCell::default() }
    }

    pub fn check(&mut self, name: impl Into<String>, ok: bool, detail: impl FnOnce() -> String) {
        let failure = if ok { None } else { Some(detail()) };
        self.results.push(Check { name: name.into(), failure });
    }

    /// A step's exit code and output; a step that did not run reads as exit -999.
    pub fn step(&self, step: Step) -> (i32, String) {
        self.steps_read.borrow_mut().push(step);
        self.report.step(&step.to_string()).cloned().unwrap_or((-999, format!("step {step} did not run")))
    }

    /// A step whose output is JSON: exit code, the value (null if it is not JSON), the text.
    pub fn json_step(&self, step: Step) -> (i32, serde_json::Value, String) {
        let (rc, out) = self.step(step);
        (rc, serde_json::from_str(&out).unwrap_or_default(), out)
    }

    /// The steps the checks looked up so far.
    pub fn steps_read(&self) -> Vec<Step> {
        self.steps_read.borrow().clone()
    }

    /// The exec was refused by the kernel with EPERM.
    pub fn denied(&mut self, step: Step) {
        let (rc, out) = self.step(step);
        self.check(
            format!("{step}: refused with EPERM"),
            rc != 0 && out.contains("Operation not permitted"),
            || format!("exit {rc}, output: {out}"),
        );
    }

    /// The kernel let the exec through (the command may still fail on its own: the mock API
    /// answers few requests).
    pub fn not_refused(&mut self, step: Step, what: &str) {
        let (rc, out) = self.step(step);
        self.check(format!("{step}: {what}"), rc != 126 && !out.contains("Operation not permitted"), || {
            format!("exit {rc}, output: {out}")
        });
    }

    /// The kernel's re-check killed the exec (SIGKILL before its first instruction: the
    /// shell reports 128 + 9 and the program printed nothing).
    pub fn killed(&mut self, step: Step) {
        let (rc, out) = self.step(step);
        self.check(format!("{step}: killed by the re-check"), rc == 137, || {
            format!("exit {rc}, output: {out}")
        });
    }

    /// The command ran and exited 0.
    pub fn succeeded(&mut self, step: Step) {
        let (rc, out) = self.step(step);
        self.check(format!("{step}: succeeds"), rc == 0, || format!("exit {rc}, output: {out}"));
    }

    /// The mock API log lines from `uid`.
    pub fn api_requests(&self, uid: u32) -> Vec<String> {
        let prefix = format!("uid={uid} ");
        self.report
            .file("mock-api")
            .unwrap_or("")
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    /// The JSON denial log the VM reported (file "denials"): its text and its records.
    pub fn denial_log(&self) -> (String, Vec<serde_json::Value>) {
        let log = self.report.file("denials").unwrap_or("").to_string();
        let records = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        (log, records)
    }

    pub fn finished(&mut self) {
        let done = self.report.done;
        let tail: String = {
            let lines: Vec<&str> = self.report.console.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        self.check("scenario ran to completion", done, || format!("console tail:\n{tail}"));
    }
}
