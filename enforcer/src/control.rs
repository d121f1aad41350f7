//! The daemon's control socket: one request line, one JSON reply line. Root only (0600).
//!
//! Requests: `ping`, `reload`, `stop`.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

pub const DEFAULT_RUNTIME_DIR: &str = "/run/enforcer";
pub const SOCKET_NAME: &str = "control.sock";

pub fn socket_path() -> PathBuf {
    let dir = std::env::var_os("ENFORCER_RUNTIME_DIR")
        .map_or_else(|| PathBuf::from(DEFAULT_RUNTIME_DIR), PathBuf::from);
    dir.join(SOCKET_NAME)
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub pid: u32,
    /// The request failed on the policy file itself (it cannot be read, is invalid, or names
    /// what this machine lacks), not on the kernel.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub policy_error: bool,
}

/// Sends one request to the daemon. `Ok(None)` when no daemon listens.
pub fn request(line: &str, timeout: Duration) -> Result<Option<Reply>> {
    let path = socket_path();
    let mut stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            return Ok(None);
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            bail!("cannot connect to {} (run as root)", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot connect to {}", path.display())),
    };
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).context("the daemon did not answer")?;
    Ok(Some(serde_json::from_str(&reply).with_context(|| format!("bad reply from the daemon: {reply:?}"))?))
}

/// `enforcer reload`.
pub fn reload() -> Result<ExitCode> {
    match request("reload", Duration::from_mins(2))? {
        None => Err(crate::exit::Unavailable(format!(
            "no daemon is running (nothing listens on {})",
            socket_path().display()
        ))
        .into()),
        Some(reply) if reply.ok => {
            println!("{}", reply.message.unwrap_or_else(|| "reloaded".into()));
            Ok(ExitCode::SUCCESS)
        }
        Some(reply) => {
            log::error!("{}", reply.error.unwrap_or_default());
            log::info!("the policy in force is unchanged");
            Ok(ExitCode::from(if reply.policy_error { crate::exit::POLICY } else { crate::exit::ERROR }))
        }
    }
}

/// `enforcer stop`: the daemon removes the pins and exits; without a daemon, remove them.
pub fn stop() -> Result<ExitCode> {
    match request("stop", Duration::from_secs(30))? {
        Some(reply) if reply.ok => {
            println!(
                "stopped: the daemon (pid {}) removed the pins and exited; {}",
                reply.pid,
                wait_detached()?
            );
        }
        Some(reply) => bail!("the daemon refused to stop: {}", reply.error.unwrap_or_default()),
        None => {
            if crate::bpf::remove_pins()? {
                println!("stopped: no daemon was running; removed the pins; {}", wait_detached()?);
            } else {
                println!("nothing to stop: no daemon and no pins");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits until the kernel has released every enforcer program: dropping the last
/// reference to a link detaches it asynchronously (and the daemon drops its own as it exits).
fn wait_detached() -> Result<&'static str> {
    Ok(if crate::bpf::wait_unloaded(Duration::from_secs(20))? {
        "nothing enforces now"
    } else {
        "but the kernel still lists enforcer programs after 20 s (see `bpftool prog`)"
    })
}
