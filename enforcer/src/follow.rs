//! `enforcer status --follow`: the denial log as it grows, across rotations, with the
//! filters of `status`. Reads the log the daemon writes (one JSON line per denial, written
//! with one write), so it works without touching the daemon and needs no connection to it.

use std::{
    fs::File,
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::{
    control,
    events::{DEFAULT_LOG_KEEP, DEFAULT_LOG_MAX_BYTES, Denial, DenialLog, Filter},
    state,
    status::{self, Query},
};

/// How often the log is looked at; a denial shows within this time.
const POLL: Duration = Duration::from_millis(250);
/// How many rotated files are looked through for the one being read (`--log-keep` is
/// smaller in any sane set-up).
const MAX_ROTATED: usize = 1000;

/// Reads the records appended to one log path, following it when it is rotated (renamed
/// away and created anew) or truncated.
pub struct Follower {
    path: PathBuf,
    /// The file being read, its (dev, inode), and how far it was read.
    open: Option<(File, (u64, u64))>,
    /// The start of a line whose end is not written yet.
    partial: Vec<u8>,
}

impl Follower {
    /// Reads the path's current file from its start.
    pub fn new(path: &Path) -> Follower {
        Follower { path: path.to_path_buf(), open: None, partial: Vec::new() }
    }

    /// The records completed since the last call, oldest first. Lines that do not parse
    /// are skipped (as `status` does).
    pub fn poll(&mut self) -> Result<Vec<Denial>> {
        let mut bytes = Vec::new();
        let current = match std::fs::metadata(&self.path) {
            Ok(meta) => Some((meta.dev(), meta.ino())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", self.path.display())),
        };
        if let Some((file, identity)) = &mut self.open {
            // Whatever the old file got before it was rotated comes first.
            let size = file.metadata()?.len();
            if size < file.stream_position()? {
                // Truncated in place (noticed once it is shorter than what was read, as
                // with `tail -f`): start again at the top.
                file.seek(SeekFrom::Start(0))?;
                self.partial.clear();
            }
            file.read_to_end(&mut bytes).with_context(|| format!("cannot read {}", self.path.display()))?;
            if current != Some(*identity) {
                // Rotated: the old file is now `.k`; `.k-1` … `.1` were created and rotated
                // since (several rotations between two polls), then the current file.
                let old = *identity;
                self.open = None;
                let rotated = |n: usize| {
                    let mut name = self.path.as_os_str().to_owned();
                    name.push(format!(".{n}"));
                    PathBuf::from(name)
                };
                let identity_of = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
                let mut k = 1;
                while k <= MAX_ROTATED && identity_of(&rotated(k)).is_some_and(|id| id != old) {
                    k += 1;
                }
                if identity_of(&rotated(k)) == Some(old) {
                    for n in (1..k).rev() {
                        if let Ok(mut file) = File::open(rotated(n)) {
                            file.read_to_end(&mut bytes)
                                .with_context(|| format!("cannot read {}", rotated(n).display()))?;
                        }
                    }
                }
            }
        }
        if self.open.is_none()
            && let Some(identity) = current
        {
            match File::open(&self.path) {
                Ok(mut file) => {
                    file.read_to_end(&mut bytes)
                        .with_context(|| format!("cannot read {}", self.path.display()))?;
                    self.open = Some((file, identity));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("cannot open {}", self.path.display())),
            }
        }
        self.partial.extend_from_slice(&bytes);
        let end = self.partial.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let complete: Vec<u8> = self.partial.drain(..end).collect();
        Ok(complete
            .split(|b| *b == b'\n')
            .filter_map(|line| serde_json::from_slice::<Denial>(line).ok())
            .collect())
    }
}

/// The last `limit` records of `filter` in the rotated files and the first poll, oldest first.
fn backlog(log: &DenialLog, follower: &mut Follower, limit: usize, filter: &Filter) -> Result<Vec<Denial>> {
    let current: Vec<Denial> = follower.poll()?.into_iter().filter(|d| filter.admits(d)).collect();
    let older =
        if current.len() < limit { log.recent_rotated(limit - current.len(), filter)? } else { vec![] };
    let mut all = older;
    all.extend(current);
    let skip = all.len().saturating_sub(limit);
    Ok(all.split_off(skip))
}

/// Prints one denial; false when stdout is closed (`| head`), which ends the stream.
fn print(out: &mut impl std::io::Write, denial: &Denial, json: bool) -> bool {
    let line =
        if json { serde_json::to_string(denial).unwrap_or_default() } else { status::denial_row(denial) };
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

pub fn follow(query: &Query, state_dir: &Path) -> Result<ExitCode> {
    let filter = status::filter_of(query)?;
    let keep = state::load(state_dir).ok().flatten().map_or(DEFAULT_LOG_KEEP, |s| s.log_keep);
    let log = DenialLog::with_limits(state_dir, DEFAULT_LOG_MAX_BYTES, keep);
    let mut follower = Follower::new(log.path());
    if control::request("ping", Duration::from_secs(5)).unwrap_or(None).is_none() {
        eprintln!(
            "enforcer: note: the daemon is not running: denials wait in the kernel and show here once it runs"
        );
    }
    let mut out = std::io::stdout().lock();
    if !query.json && writeln!(out, "{}", status::denial_header()).is_err() {
        return Ok(ExitCode::SUCCESS);
    }
    for denial in backlog(&log, &mut follower, query.limit, &filter)? {
        if !print(&mut out, &denial, query.json) {
            return Ok(ExitCode::SUCCESS);
        }
    }
    loop {
        std::thread::sleep(POLL);
        for denial in follower.poll()?.into_iter().filter(|d| filter.admits(d)) {
            if !print(&mut out, &denial, query.json) {
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(pid: u32, uid: u32) -> Denial {
        serde_json::from_value(serde_json::json!({
            "time": "2026-12-01T10:00:00Z", "uid": uid, "user": null, "pid": pid, "rule": "r",
            "action": "denied", "reason": "command", "command": "exec", "argv": ["docker", "exec"],
            "argv_truncated": false, "binary": "/usr/bin/docker", "path": "/usr/bin/docker"
        }))
        .expect("a denial record")
    }

    fn pids(records: &[Denial]) -> Vec<u32> {
        records.iter().map(|d| d.pid).collect()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("enforcer-follow-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Every record once, in order, across rotations of the log (small files, so that nearly
    /// every append rotates) and polls at arbitrary moments.
    #[test]
    fn follows_appends_and_rotations() {
        let dir = temp_dir("rotate");
        let line = serde_json::to_string(&denial(1, 1001)).unwrap().len() as u64 + 1;
        // Two records per file; three rotated files kept.
        let log = DenialLog::with_limits(&dir, 2 * line, 3);
        let mut follower = Follower::new(log.path());
        assert!(follower.poll().unwrap().is_empty(), "no log yet");
        let mut seen = Vec::new();
        for pid in 1..=20 {
            log.append(&denial(pid, 1001)).unwrap();
            // Poll after every append, then only every third, so that a rotation can happen
            // between two polls (the old file's tail must still come out).
            if pid < 8 || pid % 3 == 0 {
                seen.extend(follower.poll().unwrap());
            }
        }
        seen.extend(follower.poll().unwrap());
        assert_eq!(pids(&seen), (1..=20).collect::<Vec<_>>());
        assert!(follower.poll().unwrap().is_empty(), "nothing new");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A line being written is held back until its end arrives; a truncated file is read
    /// from its start again.
    #[test]
    fn partial_lines_and_truncation() {
        let dir = temp_dir("partial");
        let path = dir.join("denials.jsonl");
        let record = serde_json::to_string(&denial(7, 1001)).unwrap();
        let (head, tail) = record.split_at(10);
        std::fs::write(&path, head).unwrap();
        let mut follower = Follower::new(&path);
        assert!(follower.poll().unwrap().is_empty(), "half a line is not a record");
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        writeln!(file, "{tail}").unwrap();
        assert_eq!(pids(&follower.poll().unwrap()), [7]);
        // Truncated in place (the daemon never does; an administrator might), then written.
        std::fs::write(&path, "").unwrap();
        assert!(follower.poll().unwrap().is_empty());
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        writeln!(file, "{}", serde_json::to_string(&denial(8, 1001)).unwrap()).unwrap();
        assert_eq!(pids(&follower.poll().unwrap()), [8], "read from the top again");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The backlog: the last `limit` records of the filter, from the rotated files and the
    /// current one; later polls give only what came after.
    #[test]
    fn backlog_then_new_records() {
        let dir = temp_dir("backlog");
        let line = serde_json::to_string(&denial(1, 1001)).unwrap().len() as u64 + 1;
        let log = DenialLog::with_limits(&dir, 2 * line, 4);
        for pid in 1..=7 {
            log.append(&denial(pid, if pid % 2 == 0 { 1002 } else { 1001 })).unwrap();
        }
        let filter = Filter { since: None, uid: Some(1001) };
        let mut follower = Follower::new(log.path());
        let first = backlog(&log, &mut follower, 3, &filter).unwrap();
        assert_eq!(pids(&first), [3, 5, 7]);
        log.append(&denial(8, 1001)).unwrap();
        log.append(&denial(9, 1002)).unwrap();
        let next: Vec<Denial> = follower.poll().unwrap().into_iter().filter(|d| filter.admits(d)).collect();
        assert_eq!(pids(&next), [8]);
        let mut none = Follower::new(log.path());
        assert!(backlog(&log, &mut none, 0, &filter).unwrap().is_empty(), "--limit 0: only new ones");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
