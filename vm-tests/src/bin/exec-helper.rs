//! Executes a program through the exec paths a shell does not use, and carries out the
//! attacks the bypass-resistance VM tests throw at the enforcer. The VM only observes: every
//! mode reports what happened (a result line) and the host judges it.
//!
//!   exec-helper fexecve PATH ARGV...          open PATH, `execveat(fd, "", AT_EMPTY_PATH)`
//!   exec-helper execveat DIR NAME ARGV...     execveat(dirfd of DIR, NAME)
//!   exec-helper int80 PATH ARGV...            the i386 execve (int 0x80), as a 32-bit
//!                                             program would call it
//!   exec-helper storm N PATH ARGV...          fork and execve PATH N times; prints how
//!                                             many execs failed with EPERM, ran, or failed
//!                                             otherwise (`eperm=N ran=N other=N`)
//!   exec-helper notify-wait SOCKET            bind a unix datagram socket (as systemd's
//!                                             `NOTIFY_SOCKET`), print the first message, exit
//!   exec-helper uffd-race PATH ALLOWED DENIED ARGV0 [REST...]
//!                                             deterministic argv TOCTOU: execve(PATH,
//!                                             [ARGV0, W, REST...]) where W holds DENIED when
//!                                             the kernel copies it, and ALLOWED right after
//!                                             (ARGV0 sits on a userfaultfd page whose fault
//!                                             handler flips W). Stderr gets `uffd-race:
//!                                             fault handled, argv[1] now ALLOWED`; if execve
//!                                             returns: `exec: <strerror>`, exit 126
//!   exec-helper flip-race N PATH ALLOWED DENIED ARGV0 [REST...]
//!                                             N forked children each execve(PATH, [ARGV0, W,
//!                                             REST...]) while a thread flips W between ALLOWED
//!                                             and DENIED (NUL-padded to one length); the
//!                                             children's stdio is /dev/null. Prints `tries=N
//!                                             killed=K eperm=E ran=R other=O` (killed: SIGKILL;
//!                                             eperm/other: execve failed with EPERM/otherwise)
//!   exec-helper tamper PATH ARGV...           fork + execve(PATH), wait 500 ms, then try
//!                                             `ptrace(PTRACE_ATTACH)`, `open(/proc/PID/mem,
//!                                             O_RDWR)`, `process_vm_writev` of one byte and
//!                                             `pidfd_getfd(pidfd_open(PID), 0)` on the child;
//!                                             prints `ptrace=R mem=R vm_writev=R
//!                                             pidfd_getfd=R child=C` (R: OK or the strerror
//!                                             text; C: `running` when the attempts began, else
//!                                             `exited(exit=N|signal=N)`, N=100/101 when its
//!                                             execve failed with EPERM/otherwise: then the Rs
//!                                             say nothing about a defence), then kills and
//!                                             reaps the child
//!   exec-helper traceme PATH ARGV...          fork; the child does `PTRACE_TRACEME` + execve;
//!                                             prints `traceme-exec=ran` (the exec stopped the
//!                                             child with SIGTRAP), `traceme-exec=EPERM` or
//!                                             `traceme-exec=other(exit=N|signal=N|stop=N)`
//!                                             (exit=101: execve failed otherwise; exit=102:
//!                                             `PTRACE_TRACEME` itself failed)
//!   exec-helper memfd-exec PATH ARGV...       copy PATH into `memfd_create("docker")` (not
//!                                             close-on-exec, so a script works too) and
//!                                             `execveat(memfd, "", AT_EMPTY_PATH)`; if that
//!                                             returns: `exec: <strerror>`, exit 126
//!   exec-helper ps SECONDS                    sleep SECONDS, then exit 0: a copy of
//!                                             exec-helper listed as a docker client in a
//!                                             policy runs as a long-lived vetted client
//!                                             whose argv (`ps`) the engine allows
//!   exec-helper connect-unix PATH             GET /_ping over a unix stream socket; prints
//!   exec-helper connect-tcp ADDR:PORT         the first response line (exit 0), or
//!                                             `connect: <strerror>` / `io: <strerror>` (exit 1)
//!
//! ARGV includes argv[0]. int80 and storm pass an empty environment; fexecve, execveat,
//! uffd-race, flip-race, tamper, traceme and memfd-exec pass this process's environment (a
//! test's `DOCKER_HOST` reaches the docker they run).
//! strerror texts are libc's (e.g. `Operation not permitted`), without an `(os error N)`.
//! A failed exec prints the error and exits 126. When the set-up of an attack fails instead
//! (userfaultfd refused: run as root or set `vm.unprivileged_userfaultfd=1`; fork, mmap,
//! `memfd_create`, reading PATH for memfd-exec), it prints `exec-helper: WHAT: <strerror>` and
//! exits 125. Usage errors exit 2.

use std::ffi::CString;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cstr = |s: &str| CString::new(s).expect("no NUL in arguments");
    let (fd, name, argv) = match args.first().map(String::as_str) {
        Some("fexecve") if args.len() >= 3 => {
            // SAFETY: open reads only the path, a NUL-terminated CString that lives until
            // the end of the statement.
            let fd = unsafe {
                libc_open(cstr(&args[1]).as_ptr(), 0o2000000 /* O_RDONLY|O_CLOEXEC */)
            };
            (fd, String::new(), &args[2..])
        }
        Some("execveat") if args.len() >= 4 => {
            // SAFETY: as for fexecve: the path is a CString alive for the whole call.
            let fd = unsafe {
                libc_open(cstr(&args[1]).as_ptr(), 0o200000 | 0o2000000 /* O_DIRECTORY|O_CLOEXEC */)
            };
            (fd, args[2].clone(), &args[3..])
        }
        Some("int80") if args.len() >= 3 => int80_execve(&args[1], &args[2..]),
        Some("storm") if args.len() >= 4 => storm(&args[1], &args[2], &args[3..]),
        Some("notify-wait") if args.len() == 2 => notify_wait(&args[1]),
        Some("uffd-race") if args.len() >= 5 => uffd_race(&args[1], &args[2], &args[3], &args[4..]),
        Some("flip-race") if args.len() >= 6 => flip_race(&args[1], &args[2], &args[3], &args[4], &args[5..]),
        Some("tamper") if args.len() >= 3 => tamper(&args[1], &args[2..]),
        Some("traceme") if args.len() >= 3 => traceme(&args[1], &args[2..]),
        Some("memfd-exec") if args.len() >= 3 => memfd_exec(&args[1], &args[2..]),
        Some("ps") if args.len() == 2 => {
            let seconds: u64 = args[1].parse().expect("SECONDS is a number");
            std::thread::sleep(std::time::Duration::from_secs(seconds));
            std::process::exit(0);
        }
        Some("connect-unix") if args.len() == 2 => {
            connect_and_ping(std::os::unix::net::UnixStream::connect(&args[1]))
        }
        Some("connect-tcp") if args.len() == 2 => {
            connect_and_ping(std::net::TcpStream::connect(args[1].as_str()))
        }
        _ => {
            eprintln!(
                "usage: exec-helper fexecve PATH ARGV... | execveat DIR NAME ARGV... | int80 PATH ARGV... \
                 | storm N PATH ARGV... | notify-wait SOCKET \
                 | uffd-race PATH ALLOWED DENIED ARGV0 [REST...] \
                 | flip-race N PATH ALLOWED DENIED ARGV0 [REST...] | tamper PATH ARGV... \
                 | traceme PATH ARGV... | memfd-exec PATH ARGV... | connect-unix PATH \
                 | connect-tcp ADDR:PORT | ps SECONDS"
            );
            std::process::exit(2);
        }
    };
    if fd < 0 {
        eprintln!("exec-helper: open: {}", std::io::Error::last_os_error());
        std::process::exit(126);
    }
    let argv_c: Vec<CString> = argv.iter().map(|a| cstr(a)).collect();
    let mut argv_p: Vec<*const i8> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let flags = if name.is_empty() {
        0x1000 /* AT_EMPTY_PATH */
    } else {
        0
    };
    let name = cstr(&name);
    // SAFETY: execveat reads `name` (a CString), the NULL-terminated `argv_p` whose entries
    // point into `argv_c`, and glibc's `environ`; all of them outlive the call (it only
    // returns on failure).
    unsafe {
        syscall(
            322, /* execveat */
            fd as i64,
            name.as_ptr(),
            argv_p.as_ptr(),
            environment(),
            flags as i64,
        )
    };
    eprintln!("exec-helper: execveat: {}", std::io::Error::last_os_error());
    std::process::exit(126);
}

/// Stands in for systemd's notification socket: the first datagram is the readiness
/// message.
fn notify_wait(path: &str) -> ! {
    let _ = std::fs::remove_file(path);
    let socket = std::os::unix::net::UnixDatagram::bind(path).expect("bind the notify socket");
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("receive a notification");
    println!("{}", String::from_utf8_lossy(&buf[..n]));
    std::process::exit(0);
}

/// Many execs as fast as one process can fork them; each child reports how its execve
/// ended through its exit code (100: EPERM, 101: another error; anything else: it ran).
fn storm(count: &str, path: &str, argv: &[String]) -> ! {
    let count: u32 = count.parse().expect("N is a number");
    let path = CString::new(path).expect("no NUL");
    let argv_c: Vec<CString> = argv.iter().map(|a| CString::new(a.as_str()).expect("no NUL")).collect();
    let mut argv_p: Vec<*const i8> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let envp: [*const i8; 1] = [std::ptr::null()];
    let (mut eperm, mut ran, mut other) = (0u32, 0u32, 0u32);
    for _ in 0..count {
        // SAFETY: this process has one thread, and the child only calls execve and _exit.
        let pid = unsafe { fork() };
        if pid == 0 {
            // SAFETY: `path`, `argv_p` (NULL-terminated, pointing into `argv_c`) and `envp`
            // were built before the fork and are intact in the child's copy of memory;
            // __errno_location returns this thread's errno slot; _exit skips the parent's
            // destructors and atexit handlers.
            unsafe {
                execve(path.as_ptr(), argv_p.as_ptr(), envp.as_ptr());
                _exit(if *errno_location() == 1 { 100 } else { 101 });
            }
        }
        let mut status = 0i32;
        // SAFETY: `status` is a live local the kernel writes one i32 to.
        unsafe { waitpid(pid, &raw mut status, 0) };
        match (status >> 8) & 0xff {
            100 => eperm += 1,
            101 => other += 1,
            _ => ran += 1,
        }
    }
    println!("eperm={eperm} ran={ran} other={other}");
    std::process::exit(0);
}

/// execve through the 32-bit compat entry: strings and the pointer array must live below
/// 4 GiB, so they go into a `MAP_32BIT` page.
fn int80_execve(path: &str, argv: &[String]) -> ! {
    const MAP_32BIT: i32 = 0x40;
    const MAPPING: usize = 65536;
    const POINTER_AREA: usize = 4096;
    // The pointer array (argv and its NULL, which doubles as the empty envp) must fit the
    // first 4 KiB and the strings the rest: the writes below rely on it.
    let strings: usize = path.len() + 1 + argv.iter().map(|a| a.len() + 1).sum::<usize>();
    if (argv.len() + 1) * size_of::<u32>() > POINTER_AREA || strings > MAPPING - POINTER_AREA {
        eprintln!(
            "exec-helper: int80: at most {} arguments and {} bytes of strings fit the page",
            POINTER_AREA / size_of::<u32>() - 1,
            MAPPING - POINTER_AREA
        );
        std::process::exit(2);
    }
    // SAFETY: an anonymous mapping at an address of the kernel's choice: no pointer or fd
    // goes in, and the result is checked against MAP_FAILED below.
    let page = unsafe {
        mmap(std::ptr::null_mut(), MAPPING, 3 /* RW */, 0x22 | MAP_32BIT /* PRIVATE|ANON */, -1, 0)
    };
    if page as isize == -1 {
        eprintln!("exec-helper: mmap: {}", std::io::Error::last_os_error());
        std::process::exit(126);
    }
    let base = page;
    let mut offset = POINTER_AREA; // pointer array in the first 4 KiB, strings after
    let mut put = |s: &str| -> u32 {
        // SAFETY: the size check above keeps `offset + s.len() + 1` within the mapping.
        let at = unsafe { base.add(offset) };
        // SAFETY: `at..at + s.len() + 1` lies in the fresh anonymous mapping (size check
        // above), which no Rust reference covers; the source is `s`'s own bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), at, s.len());
            *at.add(s.len()) = 0;
        }
        offset += s.len() + 1;
        at as u32
    };
    let path_ptr = put(path);
    #[expect(clippy::cast_ptr_alignment, reason = "mmap returns a page-aligned address")]
    let pointers = base.cast::<u32>();
    for (i, arg) in argv.iter().enumerate() {
        let p = put(arg);
        // SAFETY: i < argv.len(), and the size check keeps argv.len() + 1 u32 slots
        // within the first 4 KiB of the page-aligned mapping, before the strings.
        unsafe { *pointers.add(i) = p };
    }
    // SAFETY: slot argv.len() is the last of those argv.len() + 1 slots.
    unsafe { *pointers.add(argv.len()) = 0 };
    // SAFETY: the same slot, in bounds as above.
    let envp = unsafe { pointers.add(argv.len()) } as u32; // an empty list
    let result: i32;
    // SAFETY: the i386 execve (eax 11) reads the path (ebx), the argv array (ecx) and the
    // empty envp (edx), all NUL/NULL-terminated in the MAP_32BIT mapping, so their
    // addresses fit the 32-bit registers. rbx, which Rust cannot name as an operand, is
    // saved and restored on the stack (the asm is not `nostack`). The kernels this runs on
    // preserve every register but eax across int 0x80 (r8-r11 included), and on success
    // the process image is replaced.
    unsafe {
        std::arch::asm!(
            "push rbx",
            "mov ebx, {path:e}",
            "int 0x80",
            "pop rbx",
            path = in(reg) path_ptr,
            inlateout("eax") 11i32 => result,
            in("ecx") pointers as u32,
            in("edx") envp,
        );
    }
    eprintln!("exec-helper: int 0x80 execve: {}", std::io::Error::from_raw_os_error(-result));
    std::process::exit(126);
}

/// The strerror text of an errno value, without std's ` (os error N)` suffix.
fn strerror(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

fn last_errno() -> i32 {
    // SAFETY: __errno_location returns the calling thread's errno slot, a valid, aligned
    // i32 for as long as the thread lives.
    unsafe { *errno_location() }
}

/// OK for a non-negative syscall result, else the strerror text of errno.
fn outcome(rc: i64) -> String {
    if rc >= 0 { "OK".to_string() } else { strerror(last_errno()) }
}

fn environment() -> *const *const i8 {
    // SAFETY: reads the pointer glibc keeps in `environ`, valid for the life of the
    // process; this program never calls setenv, so no thread changes it meanwhile.
    unsafe { environ }
}

/// `text` NUL-padded to `len` bytes plus a terminating NUL.
fn padded(text: &str, len: usize) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(len + 1, 0);
    bytes
}

fn c_strings(args: &[String]) -> Vec<CString> {
    args.iter().map(|a| CString::new(a.as_str()).expect("no NUL in arguments")).collect()
}

/// Overwrites the `bytes.len()` bytes at `dst` one volatile store at a time, so the stores
/// happen (and another thread may observe any mix of old and new).
///
/// # Safety
///
/// `dst..dst + bytes.len()` must be writable memory that lives as long as anyone writes
/// it and that no Rust reference covers while it is written.
unsafe fn write_bytes(dst: usize, bytes: &[u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        // SAFETY: in bounds and writable by the caller's contract.
        unsafe { std::ptr::write_volatile((dst as *mut u8).add(i), b) };
    }
}

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

const UFFD_API: u64 = 0xAA;
const UFFDIO_API: u64 = 0xC018_AA3F; // _IOWR(0xAA, 0x3F, struct uffdio_api)
const UFFDIO_REGISTER: u64 = 0xC020_AA00; // _IOWR(0xAA, 0x00, struct uffdio_register)
const UFFDIO_COPY: u64 = 0xC028_AA03; // _IOWR(0xAA, 0x03, struct uffdio_copy)
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
const PAGE: usize = 4096;
const O_CLOEXEC: i64 = 0o2000000;

/// A set-up step of an attack failed (not the exec under test): exit 125.
fn fail(what: &str) -> ! {
    eprintln!("exec-helper: {what}: {}", strerror(last_errno()));
    std::process::exit(125);
}

/// The deterministic argv TOCTOU. execve copies the argv strings last to first, so the
/// kernel copies W (still DENIED) before it touches ARGV0, whose page is registered with
/// userfaultfd and not yet populated. The fault handler rewrites W to ALLOWED and only then
/// supplies ARGV0's page: the kernel's copy of argv[1] says DENIED, the caller's memory
/// ALLOWED.
fn uffd_race(path: &str, allowed: &str, denied: &str, argv: &[String]) -> ! {
    let len = allowed.len().max(denied.len());
    let w = Box::leak(padded(denied, len).into_boxed_slice());
    let w_addr = w.as_mut_ptr() as usize;
    let allowed_bytes = padded(allowed, len);
    let (argv0, rest) = (&argv[0], &argv[1..]);
    if argv0.len() >= PAGE {
        eprintln!("exec-helper: ARGV0 must be shorter than a page");
        std::process::exit(2);
    }

    // SAFETY: userfaultfd takes only its flags.
    let uffd = unsafe {
        syscall(323 /* userfaultfd */, O_CLOEXEC)
    } as i32;
    if uffd < 0 {
        fail("userfaultfd");
    }
    let mut api = UffdioApi { api: UFFD_API, features: 0, ioctls: 0 };
    // SAFETY: `api` is a live #[repr(C)] copy of struct uffdio_api, the 0x18 bytes the
    // request number encodes, which the kernel reads and writes.
    if unsafe { ioctl(uffd, UFFDIO_API, &raw mut api) } < 0 {
        fail("UFFDIO_API");
    }
    // SAFETY: an anonymous mapping at an address of the kernel's choice: no pointer or fd
    // goes in, and the result is checked against MAP_FAILED below.
    let page = unsafe {
        mmap(std::ptr::null_mut(), PAGE, 3 /* RW */, 0x22 /* PRIVATE|ANON */, -1, 0)
    };
    if page as isize == -1 {
        fail("mmap");
    }
    let mut register = UffdioRegister {
        start: page as u64,
        len: PAGE as u64,
        mode: UFFDIO_REGISTER_MODE_MISSING,
        ioctls: 0,
    };
    // SAFETY: `register` is a live #[repr(C)] copy of struct uffdio_register (0x20 bytes,
    // as the request encodes); the range it names is the page mapped just above.
    if unsafe { ioctl(uffd, UFFDIO_REGISTER, &raw mut register) } < 0 {
        fail("UFFDIO_REGISTER");
    }
    let mut source = vec![0u8; PAGE];
    source[..argv0.len()].copy_from_slice(argv0.as_bytes());
    let allowed_text = allowed.to_string();

    std::thread::spawn(move || {
        let mut msg = [0u8; 32]; // struct uffd_msg
        loop {
            // SAFETY: the kernel writes at most `msg.len()` bytes into this thread's `msg`.
            let n = unsafe { read(uffd, msg.as_mut_ptr(), msg.len()) };
            if n != msg.len() as isize {
                // The exec would wait for the fault forever.
                fail("read from userfaultfd");
            }
            if msg[0] != UFFD_EVENT_PAGEFAULT {
                continue;
            }
            let address = u64::from_ne_bytes(msg[16..24].try_into().unwrap()) & !(PAGE as u64 - 1);
            // SAFETY: `w_addr` is the start of the leaked (never freed) buffer `w`, which
            // `padded` made `len + 1` bytes long like `allowed_bytes`; nothing references
            // it any more but the raw argv pointer the kernel reads.
            unsafe { write_bytes(w_addr, &allowed_bytes) };
            eprintln!("uffd-race: fault handled, argv[1] now {allowed_text}");
            let mut copy =
                UffdioCopy { dst: address, src: source.as_ptr() as u64, len: PAGE as u64, mode: 0, copy: 0 };
            // SAFETY: `copy` is a live #[repr(C)] copy of struct uffdio_copy (0x28 bytes);
            // its source is `source`, a PAGE-byte buffer this closure owns, and the kernel
            // checks that the destination page is in the registered range.
            if unsafe { ioctl(uffd, UFFDIO_COPY, &raw mut copy) } < 0 {
                fail("UFFDIO_COPY");
            }
            return;
        }
    });

    let path = CString::new(path).expect("no NUL");
    let rest_c = c_strings(rest);
    let mut argv_p: Vec<*const i8> = vec![page as *const i8, w_addr as *const i8];
    argv_p.extend(rest_c.iter().map(|a| a.as_ptr()));
    argv_p.push(std::ptr::null());
    // SAFETY: `path` and `rest_c` are CStrings alive across the call; ARGV0 is
    // NUL-terminated at the start of the registered page (the fault handler supplies it),
    // W is the leaked NUL-terminated buffer, and `argv_p` ends in NULL; `environment()` is
    // the process's own environment.
    unsafe { execve(path.as_ptr(), argv_p.as_ptr(), environment()) };
    eprintln!("exec: {}", strerror(last_errno()));
    std::process::exit(126);
}

/// Set by a flip-race child's flipping thread once it runs.
static FLIPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn wait_status(pid: i32) -> i32 {
    let mut status = 0i32;
    // SAFETY: `status` is a live local the kernel writes one i32 to.
    unsafe {
        waitpid(pid, &raw mut status, 0x4000_0000 /* __WALL */)
    };
    status
}

/// Exit code of a wait status, if the process exited.
fn exit_code(status: i32) -> Option<i32> {
    libc::WIFEXITED(status).then_some(libc::WEXITSTATUS(status))
}

/// Terminating signal of a wait status, if a signal killed the process.
fn term_signal(status: i32) -> Option<i32> {
    let sig = status & 0x7f;
    (sig != 0 && sig != 0x7f).then_some(sig)
}

/// The racy argv TOCTOU: a thread rewrites argv[1] while execve copies it.
fn flip_race(count: &str, path: &str, allowed: &str, denied: &str, argv: &[String]) -> ! {
    let count: u32 = count.parse().expect("N is a number");
    let len = allowed.len().max(denied.len());
    let (allowed, denied) = (padded(allowed, len), padded(denied, len));
    let w = Box::leak(denied.clone().into_boxed_slice());
    let w_addr = w.as_mut_ptr() as usize;
    let path = CString::new(path).expect("no NUL");
    let rest_c = c_strings(&argv[1..]);
    let argv0 = CString::new(argv[0].as_str()).expect("no NUL");
    let mut argv_p: Vec<*const i8> = vec![argv0.as_ptr(), w_addr as *const i8];
    argv_p.extend(rest_c.iter().map(|a| a.as_ptr()));
    argv_p.push(std::ptr::null());
    let dev_null = CString::new("/dev/null").unwrap();
    let (mut killed, mut eperm, mut ran, mut other) = (0u32, 0u32, 0u32, 0u32);
    for _ in 0..count {
        // SAFETY: this process has one thread (only the children start the flipping
        // thread), so the child inherits no lock another thread holds.
        let pid = unsafe { fork() };
        if pid < 0 {
            fail("fork");
        }
        if pid == 0 {
            // SAFETY: open reads the CString `dev_null`; dup2 takes only fds.
            unsafe {
                let null = libc_open(dev_null.as_ptr(), 2 /* O_RDWR */);
                if null >= 0 {
                    for fd in 0..3 {
                        dup2(null, fd);
                    }
                }
            }
            let (allowed, denied) = (allowed.clone(), denied.clone());
            std::thread::spawn(move || {
                loop {
                    // SAFETY: `w_addr` is the start of the leaked (never freed) buffer `w`,
                    // `len + 1` bytes like `allowed` and `denied`; no reference to it is used
                    // after `w_addr` was taken, only the raw argv pointer the kernel reads.
                    unsafe { write_bytes(w_addr, &allowed) };
                    FLIPPING.store(true, std::sync::atomic::Ordering::Relaxed);
                    // SAFETY: as above.
                    unsafe { write_bytes(w_addr, &denied) };
                }
            });
            while !FLIPPING.load(std::sync::atomic::Ordering::Relaxed) {
                std::hint::spin_loop();
            }
            // SAFETY: `path`, `argv0` and `rest_c` are CStrings alive across the call, W is
            // the leaked NUL-terminated buffer, `argv_p` ends in NULL, and `environment()` is
            // the process's own environment; _exit skips the parent's destructors.
            unsafe {
                execve(path.as_ptr(), argv_p.as_ptr(), environment());
                _exit(if last_errno() == 1 { 100 } else { 101 });
            }
        }
        let status = wait_status(pid);
        match (term_signal(status), exit_code(status)) {
            (Some(9), _) => killed += 1,
            (_, Some(100)) => eperm += 1,
            (_, Some(101)) => other += 1,
            _ => ran += 1,
        }
    }
    println!("tries={count} killed={killed} eperm={eperm} ran={ran} other={other}");
    std::process::exit(0);
}

/// fork + execve(PATH, ARGV) with this environment; returns the child's pid. A child whose
/// execve fails exits 100 (EPERM) or 101.
fn spawn(path: &str, argv: &[String], traceme: bool) -> i32 {
    let path = CString::new(path).expect("no NUL");
    let argv_c = c_strings(argv);
    let mut argv_p: Vec<*const i8> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    // SAFETY: this process has one thread, and the child only calls ptrace, execve and
    // _exit.
    let pid = unsafe { fork() };
    if pid < 0 {
        fail("fork");
    }
    if pid == 0 {
        // SAFETY: PTRACE_TRACEME takes no pointer; `path` and `argv_c` (which `argv_p`
        // points into, NULL-terminated) live across execve; `environment()` is the
        // process's own environment; _exit skips the parent's destructors.
        unsafe {
            if traceme && syscall(101 /* ptrace */, 0i64 /* PTRACE_TRACEME */, 0i64, 0i64, 0i64) < 0 {
                _exit(102);
            }
            execve(path.as_ptr(), argv_p.as_ptr(), environment());
            _exit(if last_errno() == 1 { 100 } else { 101 });
        }
    }
    pid
}

#[repr(C)]
struct Iovec {
    base: *mut u8,
    len: usize,
}

/// A writable address in `pid`'s memory, from /proc/PID/maps.
fn writable_address(pid: i32) -> Option<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let range = fields.next()?;
        let perms = fields.next()?;
        if !perms.starts_with("rw") {
            return None;
        }
        u64::from_str_radix(range.split('-').next()?, 16).ok()
    })
}

/// What another process of the same user can do to a running, vetted program.
fn tamper(path: &str, argv: &[String]) -> ! {
    let pid = spawn(path, argv, false);
    std::thread::sleep(std::time::Duration::from_millis(500));
    // A child that already exited (its exec refused, say) refuses ptrace too: say so.
    let running = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().to_string()))
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'));

    // SAFETY: PTRACE_ATTACH takes only the pid.
    let ptrace = unsafe {
        syscall(101, 16i64 /* PTRACE_ATTACH */, pid as i64, 0i64, 0i64)
    };
    let ptrace_result = outcome(ptrace);
    if ptrace >= 0 {
        wait_status(pid);
        // SAFETY: PTRACE_DETACH with data 0 takes no pointer.
        unsafe {
            syscall(101, 17i64 /* PTRACE_DETACH */, pid as i64, 0i64, 0i64)
        };
    }

    let mem_path = CString::new(format!("/proc/{pid}/mem")).unwrap();
    // SAFETY: open reads only `mem_path`, a CString alive across the call.
    let mem = unsafe {
        libc_open(mem_path.as_ptr(), 2 | 0o2000000 /* O_RDWR|O_CLOEXEC */)
    };
    let mem_result = outcome(mem as i64);
    if mem >= 0 {
        // SAFETY: `mem` is the fd opened just above, owned here and not used again.
        unsafe { close(mem) };
    }

    // Without an address from the maps (unreadable when ptrace access is refused) any
    // address does: the access check comes first (EPERM), the address later (EFAULT).
    let address = writable_address(pid).unwrap_or(0x10000);
    let mut byte = 0u8;
    let local = Iovec { base: &raw mut byte, len: 1 };
    let remote = Iovec { base: address as *mut u8, len: 1 };
    // Read the byte first so that the write, if allowed, changes nothing.
    // SAFETY: `local` describes `byte`, a live local of the one byte it names; `remote`
    // describes memory in the child, which the kernel checks and this process never
    // dereferences. Both iovecs are #[repr(C)] struct iovec and outlive the call.
    unsafe {
        syscall(310 /* process_vm_readv */, pid as i64, &local, 1i64, &remote, 1i64, 0i64)
    };
    // SAFETY: as for process_vm_readv just above.
    let written = unsafe {
        syscall(311 /* process_vm_writev */, pid as i64, &local, 1i64, &remote, 1i64, 0i64)
    };
    let writev_result = match written {
        1 => "OK".to_string(),
        n if n < 0 => strerror(last_errno()),
        n => format!("wrote-{n}-bytes"),
    };

    // SAFETY: pidfd_open takes only the pid and flags.
    let pidfd = unsafe {
        syscall(434 /* pidfd_open */, pid as i64, 0i64)
    };
    let getfd_result = if pidfd < 0 {
        format!("pidfd_open:{}", strerror(last_errno()))
    } else {
        // SAFETY: pidfd_getfd takes only fds and flags.
        let fd = unsafe {
            syscall(438 /* pidfd_getfd */, pidfd, 0i64, 0i64)
        };
        let result = outcome(fd);
        // SAFETY: both fds were returned to this process just above and are not used again.
        unsafe {
            if fd >= 0 {
                close(fd as i32);
            }
            close(pidfd as i32);
        }
        result
    };

    // SAFETY: kill takes no pointer; `pid` is our unreaped child, so it names no other
    // process.
    unsafe { kill(pid, 9) };
    let status = wait_status(pid);
    let child = if running {
        "running".to_string()
    } else {
        match (exit_code(status), term_signal(status)) {
            (Some(code), _) => format!("exited(exit={code})"),
            (_, Some(sig)) => format!("exited(signal={sig})"),
            _ => format!("exited(status={status})"),
        }
    };
    println!(
        "ptrace={ptrace_result} mem={mem_result} vm_writev={writev_result} pidfd_getfd={getfd_result} child={child}"
    );
    std::process::exit(0);
}

/// Exec under a tracer: the child asks to be traced, then execs.
fn traceme(path: &str, argv: &[String]) -> ! {
    let pid = spawn(path, argv, true);
    let status = wait_status(pid);
    if status & 0xff == 0x7f {
        let sig = (status >> 8) & 0xff;
        if sig == 5 {
            println!("traceme-exec=ran");
        } else {
            println!("traceme-exec=other(stop={sig})");
        }
        // SAFETY: kill takes no pointer; `pid` is our unreaped (stopped) child.
        unsafe { kill(pid, 9) };
        wait_status(pid);
    } else if let Some(sig) = term_signal(status) {
        println!("traceme-exec=other(signal={sig})");
    } else {
        match exit_code(status) {
            Some(100) => println!("traceme-exec=EPERM"),
            Some(code) => println!("traceme-exec=other(exit={code})"),
            None => println!("traceme-exec=other(status={status})"),
        }
    }
    std::process::exit(0);
}

/// Exec an anonymous copy of PATH. The memfd is not close-on-exec, so a script works too.
fn memfd_exec(path: &str, argv: &[String]) -> ! {
    use std::{io::Write, os::fd::FromRawFd};
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        eprintln!("exec-helper: read {path}: {}", strerror(e.raw_os_error().unwrap_or(0)));
        std::process::exit(125);
    });
    let name = CString::new("docker").unwrap();
    // SAFETY: memfd_create reads only `name`, a CString alive across the call.
    let fd = unsafe {
        syscall(319 /* memfd_create */, name.as_ptr(), 0i64)
    } as i32;
    if fd < 0 {
        fail("memfd_create");
    }
    // SAFETY: `fd` is the memfd just created, owned by nothing else; ManuallyDrop keeps
    // the File from closing it, since execveat needs it open.
    let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    if let Err(e) = file.write_all(&bytes) {
        eprintln!("exec-helper: write memfd: {e}");
        std::process::exit(125);
    }
    let argv_c = c_strings(argv);
    let mut argv_p: Vec<*const i8> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let empty = CString::new("").unwrap();
    // SAFETY: `empty` and `argv_c` (which the NULL-terminated `argv_p` points into) live
    // across the call, `environment()` is the process's own environment, and `fd` is the
    // open memfd.
    unsafe {
        syscall(
            322, /* execveat */
            fd as i64,
            empty.as_ptr(),
            argv_p.as_ptr(),
            environment(),
            0x1000i64, /* AT_EMPTY_PATH */
        )
    };
    eprintln!("exec: {}", strerror(last_errno()));
    std::process::exit(126);
}

/// GET /_ping over an established connection; prints the status line.
fn connect_and_ping<S: std::io::Read + std::io::Write>(stream: std::io::Result<S>) -> ! {
    use std::io::BufRead;
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(e) => {
            println!("connect: {}", strerror(e.raw_os_error().unwrap_or(0)));
            std::process::exit(1);
        }
    };
    let io_error = |e: std::io::Error| -> ! {
        println!("io: {}", e.raw_os_error().map_or_else(|| e.to_string(), strerror));
        std::process::exit(1);
    };
    if let Err(e) = stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n") {
        io_error(e);
    }
    let mut line = String::new();
    match std::io::BufReader::new(stream).read_line(&mut line) {
        Ok(0) => {
            println!("io: no response");
            std::process::exit(1);
        }
        Ok(_) => println!("{}", line.trim_end()),
        Err(e) => io_error(e),
    }
    std::process::exit(0);
}

unsafe extern "C" {
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, offset: i64) -> *mut u8;
    #[link_name = "open"]
    fn libc_open(path: *const i8, flags: i32, ...) -> i32;
    fn syscall(number: i64, ...) -> i64;
    fn fork() -> i32;
    fn execve(path: *const i8, argv: *const *const i8, envp: *const *const i8) -> i32;
    fn _exit(code: i32) -> !;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    #[link_name = "__errno_location"]
    fn errno_location() -> *mut i32;
    fn ioctl(fd: i32, request: u64, ...) -> i32;
    fn read(fd: i32, buf: *mut u8, count: usize) -> isize;
    fn close(fd: i32) -> i32;
    fn dup2(old: i32, new: i32) -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
    static environ: *const *const i8;
}
