//! One module per program, named after its hook (the LSM hooks, and the cgroup
//! `connect_unix` hook of the connect routing). The loader (enforcer/src/bpf.rs)
//! finds the programs by their function names, so those stay as they are.
//!
//! Every hook that gets the verdict of the LSMs before it (`previous`) returns that first:
//! a refusal stands.

mod bprm_check_security;
mod bprm_committing_creds;
mod cgroup_connect_unix;
mod file_open;
mod ptrace_access_check;
mod socket_connect;
mod socket_sendmsg;
mod task_prctl;
mod unix_stream_connect;
