//! The measuring side of `cargo xtask bench`, run inside the VM.
//!
//!   bench-exec loop N WARMUP PATH ARGV...     fork+execve PATH, waitpid, N times (after
//!                                             WARMUP untimed ones); prints
//!                                             `execs=N failed=F ns=TOTAL`
//!   bench-exec times N WARMUP PATH ARGV...    runs PATH (argv[0] from ARGV, the caller's
//!                                             environment, stdio on /dev/null) N times
//!                                             after WARMUP untimed runs, one at a time;
//!                                             prints `runs=N failed=F ns=T1,T2,...` (each
//!                                             run from spawn to exit)
//!   bench-exec start LOG ENFORCER ARGS...     starts `ENFORCER ARGS` (output to LOG) with a
//!                                             `NOTIFY_SOCKET` of its own, waits for READY=1;
//!                                             prints `pid=P ready_ns=T`, leaves it running
//!   bench-exec wait-exit PID                  waits until PID has exited
//!   bench-exec mem PID                        prints `rss_kib=R hwm_kib=H` of PID
//!
//! ARGV includes argv[0]; the environment of the executed program is empty. A child that
//! does not exit 0 counts as failed (an EPERM exec exits 100).

use std::{
    ffi::CString,
    os::unix::net::UnixDatagram,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("loop") if args.len() >= 5 => exec_loop(&args[1], &args[2], &args[3], &args[4..]),
        Some("times") if args.len() >= 5 => times(&args[1], &args[2], &args[3], &args[4..]),
        Some("start") if args.len() >= 3 => start(&args[1], &args[2], &args[3..]),
        Some("wait-exit") if args.len() == 2 => wait_exit(&args[1]),
        Some("mem") if args.len() == 2 => mem(&args[1]),
        _ => Err("usage: bench-exec loop N WARMUP PATH ARGV... | times N WARMUP PATH ARGV... | start LOG ENFORCER ARGS... | wait-exit PID | mem PID"
            .to_string()),
    };
    if let Err(error) = result {
        eprintln!("bench-exec: {error}");
        std::process::exit(1);
    }
}

fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("{what} must be a number, not {text:?}"))
}

fn exec_loop(count: &str, warmup: &str, path: &str, argv: &[String]) -> Result<(), String> {
    let count: u64 = number(count, "N")?;
    let warmup: u64 = number(warmup, "WARMUP")?;
    let path = CString::new(path).map_err(|_| "NUL in PATH")?;
    let argv_c: Vec<CString> =
        argv.iter().map(|a| CString::new(a.as_str())).collect::<Result<_, _>>().map_err(|_| "NUL in ARGV")?;
    let mut argv_p: Vec<*const i8> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let envp: [*const i8; 1] = [std::ptr::null()];
    // Everything the child touches is prepared before the clock starts.
    let run = |n: u64| -> u64 {
        let mut failed = 0;
        for _ in 0..n {
            // SAFETY: the child only calls execve and _exit (async-signal-safe).
            let pid = unsafe { fork() };
            if pid == 0 {
                // SAFETY: `path`, `argv_p` (NULL-terminated, pointing into `argv_c`) and
                // `envp` were built before the fork and are intact in the child's copy;
                // _exit skips the parent's destructors and atexit handlers.
                unsafe {
                    execve(path.as_ptr(), argv_p.as_ptr(), envp.as_ptr());
                    _exit(100);
                }
            }
            let mut status = 0i32;
            // SAFETY: `status` is a live local the kernel writes one i32 to.
            if pid < 0 || unsafe { waitpid(pid, &raw mut status, 0) } != pid || status != 0 {
                failed += 1;
            }
        }
        failed
    };
    run(warmup);
    let started = Instant::now();
    let failed = run(count);
    let ns = started.elapsed().as_nanos();
    println!("execs={count} failed={failed} ns={ns}");
    Ok(())
}

/// A real program (the docker CLI) run to its end, each run timed on its own.
fn times(count: &str, warmup: &str, path: &str, argv: &[String]) -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;
    let count: u64 = number(count, "N")?;
    let warmup: u64 = number(warmup, "WARMUP")?;
    let once = || -> Result<(bool, u128), String> {
        let started = Instant::now();
        let status = Command::new(path)
            .arg0(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {path}: {e}"))?;
        Ok((status.success(), started.elapsed().as_nanos()))
    };
    for _ in 0..warmup {
        once()?;
    }
    let mut failed = 0;
    let mut ns = Vec::new();
    for _ in 0..count {
        let (ok, t) = once()?;
        if !ok {
            failed += 1;
        }
        ns.push(t.to_string());
    }
    println!("runs={count} failed={failed} ns={}", ns.join(","));
    Ok(())
}

/// Times `enforcer run` from the spawn to its READY=1 (sent once the hook is attached).
fn start(log: &str, enforcer: &str, args: &[String]) -> Result<(), String> {
    let socket_path = format!("/run/bench-notify-{}.sock", std::process::id());
    let _ = std::fs::remove_file(&socket_path);
    let socket = UnixDatagram::bind(&socket_path).map_err(|e| format!("bind {socket_path}: {e}"))?;
    socket.set_read_timeout(Some(Duration::from_mins(2))).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(log).map_err(|e| format!("create {log}: {e}"))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let child = Command::new(enforcer)
        .args(args)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {enforcer}: {e}"))?;
    let mut buf = [0u8; 256];
    let received = socket.recv(&mut buf);
    let ready_ns = started.elapsed().as_nanos();
    let _ = std::fs::remove_file(&socket_path);
    match received {
        Ok(n) if buf[..n].starts_with(b"READY=1") => {
            println!("pid={} ready_ns={ready_ns}", child.id());
            Ok(())
        }
        Ok(n) => Err(format!("unexpected notification {:?}", String::from_utf8_lossy(&buf[..n]))),
        Err(e) => Err(format!("no READY=1 from {enforcer}: {e}")),
    }
}

/// The process's state letter from /proc/PID/stat, None once it is gone.
fn state(pid: &str) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": comm may contain spaces, the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// A daemon started by `start` is not our child: wait until it is gone or a zombie (its
/// file descriptors, and so its BPF links, are released either way).
fn wait_exit(pid: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_mins(1);
    while let Some(s) = state(pid) {
        if s == 'Z' {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("process {pid} still runs (state {s})"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn mem(pid: &str) -> Result<(), String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let field = |name: &str| -> Result<u64, String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
    };
    println!("rss_kib={} hwm_kib={}", field("VmRSS:")?, field("VmHWM:")?);
    Ok(())
}

unsafe extern "C" {
    fn fork() -> i32;
    fn execve(path: *const i8, argv: *const *const i8, envp: *const *const i8) -> i32;
    fn _exit(code: i32) -> !;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
}
