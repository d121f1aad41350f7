//! The no-bpf-lsm group: a kernel booted without the BPF LSM in `lsm=`. The daemon refuses
//! to start and says how to fix it; status says nothing enforces.

use crate::{
    checks::Checks,
    step::Step,
    suite::{Flavour, Group},
};

// The steps, in the order the script prints them.
const RUN_WITHOUT_BPF_LSM: Step = Step::new("run-without-bpf-lsm");
const STATUS: Step = Step::new("status");

/// The lsm= list without bpf, as on a kernel booted without it.
const LSM_WITHOUT_BPF: &str = "landlock,lockdown,yama,integrity,apparmor";

pub(super) fn group() -> Group {
    Group {
        name: "no-bpf-lsm",
        script: script(),
        files: vec![],
        lsm: LSM_WITHOUT_BPF,
        flavour: Flavour::Initramfs,
        disk_files: vec![],
        check,
    }
}

pub(super) fn script() -> String {
    format!(
        "step {RUN_WITHOUT_BPF_LSM} root /usr/local/sbin/enforcer run\nstep {STATUS} root /usr/local/sbin/enforcer status\n"
    )
}

pub(super) fn check(c: &mut Checks) {
    c.finished();
    let (rc, out) = c.step(RUN_WITHOUT_BPF_LSM);
    c.check(
        "refuses to start without the BPF LSM, and says how to fix it",
        rc != 0 && out.contains("the BPF LSM is not active") && out.contains("lsm="),
        || format!("exit {rc}: {out}"),
    );
    let (rc, _) = c.step(STATUS);
    c.check("status exits non-zero when nothing enforces", rc != 0, || format!("exit {rc}"));
}
