//! The attacker tooling of the bypass-resistance VM tests (exec-helper's attack modes, the
//! i386 exec trampoline, the mock API's TCP listener), proven to work on a host without the
//! enforcer. A VM test that sees one of these attacks fail can then only be seeing the
//! kernel defence. They need root (userfaultfd in kernel mode, ptrace) and IA32 emulation;
//! they never skip.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    time::{Duration, Instant},
};

const EXEC_HELPER: &str = env!("CARGO_BIN_EXE_exec-helper");
const MOCK_API: &str = env!("CARGO_BIN_EXE_mock-docker-api");

fn run(program: &str, args: &[&str]) -> Output {
    let output =
        Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    eprintln!(
        "{program} {args:?}: {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn helper(args: &[&str]) -> Output {
    run(EXEC_HELPER, args)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A fresh directory under the target's temporary directory.
fn scratch(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("attack-tools-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn uffd_race_execs_the_kernel_copy_of_argv() {
    // argv = [echo, W, x]: W is "ps" in memory once the fault is handled, but the kernel had
    // already copied "exec", and echo prints the kernel's copy.
    let output = helper(&["uffd-race", "/bin/echo", "ps", "exec", "echo", "x"]);
    assert!(
        output.status.success(),
        "uffd-race failed (userfaultfd refused? it needs root or vm.unprivileged_userfaultfd=1): {}",
        stderr(&output)
    );
    assert_eq!(stdout(&output), "exec x\n");
    assert!(stderr(&output).contains("uffd-race: fault handled, argv[1] now ps"), "{}", stderr(&output));
}

#[test]
fn uffd_race_pads_to_the_longer_word() {
    let output = helper(&["uffd-race", "/bin/echo", "version", "ps", "echo", "a", "b"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "ps a b\n");
    assert!(stderr(&output).contains("argv[1] now version"));
}

#[test]
fn uffd_race_reports_a_failed_exec() {
    let output = helper(&["uffd-race", "/nonexistent", "ps", "exec", "docker"]);
    assert_eq!(output.status.code(), Some(126));
    assert!(stderr(&output).contains("exec: No such file or directory"), "{}", stderr(&output));
}

#[test]
fn flip_race_runs_every_try() {
    let output = helper(&["flip-race", "20", "/bin/echo", "ps", "exec", "echo", "x"]);
    assert!(output.status.success());
    assert_eq!(stdout(&output), "tries=20 killed=0 eperm=0 ran=20 other=0\n");
}

#[test]
fn flip_race_counts_failed_execs() {
    let output = helper(&["flip-race", "3", "/nonexistent", "ps", "exec", "docker"]);
    assert_eq!(stdout(&output), "tries=3 killed=0 eperm=0 ran=0 other=3\n");
}

#[test]
fn tamper_succeeds_without_the_defence() {
    let output = helper(&["tamper", "/bin/sleep", "sleep", "30"]);
    assert!(output.status.success());
    assert_eq!(stdout(&output), "ptrace=OK mem=OK vm_writev=OK pidfd_getfd=OK child=running\n");
}

#[test]
fn tamper_reports_a_gone_child() {
    // The child's exec fails and it exits (101) before the attempts; ptrace on a zombie
    // fails with EPERM, which child= tells apart from a refusal.
    let output = helper(&["tamper", "/nonexistent", "x"]);
    assert!(output.status.success());
    let line = stdout(&output);
    assert!(line.ends_with(" child=exited(exit=101)\n"), "{line}");
}

#[test]
fn traceme_exec_runs_under_trace() {
    let output = helper(&["traceme", "/bin/true", "true"]);
    assert!(output.status.success());
    assert_eq!(stdout(&output), "traceme-exec=ran\n");
}

#[test]
fn traceme_reports_other_failures() {
    let output = helper(&["traceme", "/nonexistent", "x"]);
    assert_eq!(stdout(&output), "traceme-exec=other(exit=101)\n");
}

#[test]
fn memfd_exec_runs_the_copy() {
    let output = helper(&["memfd-exec", "/bin/echo", "echo", "from", "memfd"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "from memfd\n");
}

#[test]
fn memfd_exec_runs_a_script() {
    let dir = scratch("memfd-script");
    let script = dir.join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho script \"$@\"\n").unwrap();
    let output = helper(&["memfd-exec", script.to_str().unwrap(), "script", "ok"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "script ok\n");
}

struct MockApi {
    child: Child,
    log: PathBuf,
}

impl Drop for MockApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mock docker API on `socket`, with `extra` arguments; returns once it listens.
fn mock_api(dir: &Path, extra: &[&str]) -> MockApi {
    let socket = dir.join("docker.sock");
    let log = dir.join("api.log");
    let child =
        Command::new(MOCK_API).arg(&socket).arg(&log).args(extra).spawn().expect("start mock-docker-api");
    let mut api = MockApi { child, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "mock-docker-api did not listen on {}", socket.display());
        if let Ok(Some(status)) = api.child.try_wait() {
            panic!("mock-docker-api exited ({status}) before it listened on {}", socket.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    api
}

/// A mock API with a TCP listener too, on a free port (tried again when another test took
/// the port between the probe and the mock's bind); returns it with its address once both
/// listen.
fn mock_api_tcp(dir: &Path) -> (MockApi, String) {
    for _ in 0..5 {
        let address = format!("127.0.0.1:{}", free_port());
        let socket = dir.join("docker.sock");
        let log = dir.join("api.log");
        let child = Command::new(MOCK_API)
            .arg(&socket)
            .arg(&log)
            .args(["--tcp", &address])
            .spawn()
            .expect("start mock-docker-api");
        let mut api = MockApi { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(api.child.try_wait(), Ok(Some(_))) {
                break;
            }
            if std::net::TcpStream::connect(&address).is_ok()
                && std::os::unix::net::UnixStream::connect(&socket).is_ok()
            {
                return (api, address);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("mock-docker-api did not listen on TCP after 5 tries");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_log(api: &MockApi, line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(&api.log).unwrap_or_default();
        if log.lines().any(|l| l == line) || Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connect_unix_and_tcp_reach_the_mock_api() {
    let dir = scratch("connect");
    let (api, address) = mock_api_tcp(&dir);
    let socket = dir.join("docker.sock");

    let output = helper(&["connect-unix", socket.to_str().unwrap()]);
    assert!(output.status.success());
    assert_eq!(stdout(&output), "HTTP/1.1 200 OK\n");
    let log = wait_for_log(&api, "uid=0 GET /_ping");
    assert!(log.lines().any(|l| l == "uid=0 GET /_ping"), "log: {log}");

    let output = helper(&["connect-tcp", &address]);
    assert!(output.status.success());
    assert_eq!(stdout(&output), "HTTP/1.1 200 OK\n");
    let log = wait_for_log(&api, "tcp GET /_ping");
    assert!(log.lines().any(|l| l == "tcp GET /_ping"), "log: {log}");
}

#[test]
fn connect_reports_refusal() {
    let dir = scratch("refused");
    let output = helper(&["connect-unix", dir.join("none.sock").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "connect: No such file or directory\n");
    let output = helper(&["connect-tcp", &format!("127.0.0.1:{}", free_port())]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "connect: Connection refused\n");
}

#[test]
fn mock_api_keeps_the_positional_usage() {
    let dir = scratch("positional");
    // GID 0: chown to root:root, as the VM does with the docker group.
    let api = mock_api(&dir, &["0"]);
    let socket = dir.join("docker.sock");
    let output = helper(&["connect-unix", socket.to_str().unwrap()]);
    assert_eq!(stdout(&output), "HTTP/1.1 200 OK\n");
    let log = wait_for_log(&api, "uid=0 GET /_ping");
    assert!(log.lines().any(|l| l == "uid=0 GET /_ping"), "log: {log}");
}

#[test]
fn curl_talks_to_the_mock_api_over_its_socket() {
    let dir = scratch("curl");
    let api = mock_api(&dir, &[]);
    let socket = dir.join("docker.sock");
    let output = run("curl", &["-sS", "--unix-socket", socket.to_str().unwrap(), "http://docker/_ping"]);
    assert!(output.status.success());
    assert_eq!(stdout(&output), "OK");
    let log = wait_for_log(&api, "uid=0 GET /_ping");
    assert!(log.lines().any(|l| l == "uid=0 GET /_ping"), "log: {log}");
}

/// The i386 trampoline, written out as an executable file.
fn exec32(dir: &Path) -> PathBuf {
    let path = dir.join("exec32");
    std::fs::write(&path, vm_tests::elf32::exec_trampoline()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn run_exec32(args: &[&str]) -> Output {
    let dir = scratch("exec32");
    let path = exec32(&dir);
    let output = Command::new(&path).args(args).output();
    match output {
        Ok(output) => output,
        Err(e) if e.raw_os_error() == Some(8) => {
            panic!(
                "the kernel refused to run the i386 program (ENOEXEC): no IA32 emulation on this host? {e}"
            )
        }
        Err(e) => panic!("cannot run {}: {e}", path.display()),
    }
}

#[test]
fn exec32_execs_its_arguments() {
    let output = run_exec32(&["/bin/echo", "hello"]);
    assert!(output.status.success(), "{:?} {}", output.status, stderr(&output));
    assert_eq!(stdout(&output), "hello\n");
}

#[test]
fn exec32_passes_the_environment() {
    let dir = scratch("exec32-env");
    let path = exec32(&dir);
    let output = Command::new(&path).args(["/usr/bin/env"]).env_clear().env("MARK", "i386").output().unwrap();
    assert_eq!(stdout(&output), "MARK=i386\n");
}

#[test]
fn exec32_exits_with_the_errno() {
    let output = run_exec32(&["/nonexistent"]);
    assert_eq!(output.status.code(), Some(2), "ENOENT");
    let output = run_exec32(&[]);
    assert_eq!(output.status.code(), Some(14), "EFAULT: no PATH");
}

// ---- subvert: the round-2 attacks on the vetted client itself --------------------------

const SUBVERT: &str = env!("CARGO_BIN_EXE_subvert");

/// The docker CLI the VM tests use (the host's).
fn docker_cli() -> String {
    for candidate in ["/usr/local/bin/docker", "/usr/bin/docker"] {
        if Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    panic!("no docker CLI on this host (cargo xtask setup installs one)");
}

fn subvert(args: &[&str]) -> Output {
    run(SUBVERT, args)
}

#[test]
fn set_mm_exe_makes_another_file_the_executable() {
    let dir = scratch("set-mm");
    let api = mock_api(&dir, &[]);
    let socket = dir.join("docker.sock");
    let docker = docker_cli();
    let output = subvert(&["set-mm-exe", &docker, socket.to_str().unwrap()]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.starts_with(&format!("set_mm=OK exe={docker} request=HTTP/1.1")), "{out}");
    let log = wait_for_log(&api, "uid=0 POST /v1.41/containers/gitea/exec?via=set-mm-exe");
    assert!(log.contains("POST /v1.41/containers/gitea/exec?via=set-mm-exe"), "log: {log}");
}

#[test]
fn seccomp_supervisor_injects_a_shared_socket_into_the_client() {
    let dir = scratch("notify");
    let api = mock_api(&dir, &[]);
    let host = format!("unix://{}", dir.join("docker.sock").display());
    let docker = docker_cli();
    let output = subvert(&["seccomp-notify", &docker, "docker", "-H", &host, "version"]);
    let out = stdout(&output);
    // The response may be read by docker, which shares the socket: the API's log is the proof.
    assert!(out.contains("injected=OK request="), "{out}");
    let log = wait_for_log(&api, "uid=0 POST /v1.41/containers/gitea/exec?via=seccomp-notify");
    assert!(log.contains("exec?via=seccomp-notify"), "log: {log}");
}

#[test]
fn seccomp_errno0_hands_the_client_a_shared_socket() {
    let dir = scratch("errno0");
    let api = mock_api(&dir, &[]);
    let host = format!("unix://{}", dir.join("docker.sock").display());
    let docker = docker_cli();
    let output = subvert(&["seccomp-errno0", &docker, "docker", "-H", &host, "version"]);
    let out = stdout(&output);
    // docker's own output (it shares stdout) comes first; the result line is the last. The
    // response may be read by docker, which shares the socket: the API's log is the proof.
    assert!(out.lines().last().is_some_and(|l| l.starts_with("request=")), "{out}");
    let log = wait_for_log(&api, "uid=0 POST /v1.41/containers/gitea/exec?via=seccomp-errno0");
    assert!(log.contains("exec?via=seccomp-errno0"), "log: {log}");
}

#[test]
fn plain_filter_chains_let_the_client_run() {
    for filters in ["3", "130"] {
        let output = subvert(&["seccomp-plain", filters, "/bin/true", "true"]);
        assert_eq!(stdout(&output), "child=exit=0\n", "{filters} filters");
    }
    // The filters are real: the errno action fails kexec_load with EPERM, not ENOSYS.
    let output = subvert(&["seccomp-plain", "1", "/bin/false", "false"]);
    assert_eq!(stdout(&output), "child=exit=1\n");
}

#[test]
fn fastopen_reaches_the_tcp_api() {
    let dir = scratch("fastopen");
    let (api, address) = mock_api_tcp(&dir);
    let output = subvert(&["fastopen", &address]);
    assert!(stdout(&output).starts_with("sendto=OK request=HTTP/1.1"), "{}", stdout(&output));
    let log = wait_for_log(&api, "tcp POST /v1.41/containers/gitea/exec?via=fastopen");
    assert!(log.contains("tcp POST /v1.41/containers/gitea/exec?via=fastopen"), "log: {log}");
}

#[test]
fn jam_scratch_finds_nothing_without_the_enforcer() {
    let output = subvert(&["jam-scratch", "1"]);
    assert_eq!(stdout(&output), "jammed=0\n");
}

/// The fake loader (vm-tests/src/elf64.rs) bind-mounted over the dynamic loader in a mount
/// namespace: a dynamically linked program executed there runs it, with its own file as
/// the executable, and the request reaches the API.
#[test]
fn fake_loader_runs_in_place_of_a_dynamic_client() {
    let dir = scratch("fake-ld");
    let api = mock_api(&dir, &[]);
    let socket = dir.join("docker.sock");
    let loader = dir.join("fake-ld");
    std::fs::write(&loader, vm_tests::elf64::fake_loader(socket.to_str().unwrap())).unwrap();
    std::fs::set_permissions(&loader, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script =
        format!("mount --bind {} /lib64/ld-linux-x86-64.so.2 && exec {EXEC_HELPER} ps 0", loader.display());
    let output = run("unshare", &["-m", "--propagation", "private", "sh", "-c", &script]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).starts_with("HTTP/1.1 "), "{}", stdout(&output));
    let log = wait_for_log(&api, "uid=0 POST /v1.41/containers/gitea/exec?via=fake-loader");
    assert!(log.contains("exec?via=fake-loader"), "log: {log}");
}

/// The reload-race listener holds the first exec of a dynamic program by the given uid at
/// its loader, asks the daemon's control socket to reload meanwhile, and lets it go on.
#[test]
fn reload_race_holds_an_exec_until_the_reload_is_answered() {
    use std::io::{BufRead as _, Write as _};
    let dir = scratch("reload-race");
    let listener = std::os::unix::net::UnixListener::bind(dir.join("control.sock")).unwrap();
    let requests = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&stream).read_line(&mut line).unwrap();
        (&stream).write_all(b"{\"ok\":true,\"pid\":1}\n").unwrap();
        line
    });
    let (config, new, ready) = (dir.join("policy.toml"), dir.join("new.toml"), dir.join("ready"));
    std::fs::write(&config, "old").unwrap();
    std::fs::write(&new, "new").unwrap();
    let race = Command::new(SUBVERT)
        .args(["reload-race", config.to_str().unwrap(), new.to_str().unwrap(), ready.to_str().unwrap(), "0"])
        .env("ENFORCER_RUNTIME_DIR", &dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the listener did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Any dynamically linked program opens the loader: this one is held until the reload.
    let held = run(EXEC_HELPER, &["ps", "0"]);
    assert!(held.status.success());
    let output = race.wait_with_output().unwrap();
    assert_eq!(stdout(&output), "reloaded=OK held=1\n");
    assert_eq!(requests.join().unwrap(), "reload\n");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "new");
}
