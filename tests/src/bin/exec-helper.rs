//! Executes a program through the exec paths a shell does not use, for the VM tests.
//!
//!   exec-helper fexecve PATH ARGV...          open PATH, execveat(fd, "", AT_EMPTY_PATH)
//!   exec-helper execveat DIR NAME ARGV...     execveat(dirfd of DIR, NAME)
//!   exec-helper int80 PATH ARGV...            the i386 execve (int 0x80), as a 32-bit
//!                                             program would call it
//!   exec-helper storm N PATH ARGV...          fork and execve PATH N times; prints how
//!                                             many execs failed with EPERM, ran, or failed
//!                                             otherwise (`eperm=N ran=N other=N`)
//!   exec-helper notify-wait SOCKET            bind a unix datagram socket (as systemd's
//!                                             NOTIFY_SOCKET), print the first message, exit
//!
//! ARGV includes argv[0]. On failure it prints the error (strerror) and exits 126.

use std::ffi::CString;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cstr = |s: &str| CString::new(s).expect("no NUL in arguments");
    let (fd, name, argv) = match args.first().map(String::as_str) {
        Some("fexecve") if args.len() >= 3 => {
            let fd = unsafe {
                libc_open(cstr(&args[1]).as_ptr(), 0o2000000 /* O_RDONLY|O_CLOEXEC */)
            };
            (fd, String::new(), &args[2..])
        }
        Some("execveat") if args.len() >= 4 => {
            let fd = unsafe {
                libc_open(cstr(&args[1]).as_ptr(), 0o200000 | 0o2000000 /* O_DIRECTORY|O_CLOEXEC */)
            };
            (fd, args[2].clone(), &args[3..])
        }
        Some("int80") if args.len() >= 3 => int80_execve(&args[1], &args[2..]),
        Some("storm") if args.len() >= 4 => storm(&args[1], &args[2], &args[3..]),
        Some("notify-wait") if args.len() == 2 => notify_wait(&args[1]),
        _ => {
            eprintln!(
                "usage: exec-helper fexecve PATH ARGV... | execveat DIR NAME ARGV... | int80 PATH ARGV... | storm N PATH ARGV..."
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
    let envp: [*const i8; 1] = [std::ptr::null()];
    let flags = if name.is_empty() {
        0x1000 /* AT_EMPTY_PATH */
    } else {
        0
    };
    let name = cstr(&name);
    unsafe {
        syscall(
            322, /* execveat */
            fd as i64,
            name.as_ptr(),
            argv_p.as_ptr(),
            envp.as_ptr(),
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
        let pid = unsafe { fork() };
        if pid == 0 {
            unsafe {
                execve(path.as_ptr(), argv_p.as_ptr(), envp.as_ptr());
                _exit(if *errno_location() == 1 { 100 } else { 101 });
            }
        }
        let mut status = 0i32;
        unsafe { waitpid(pid, &mut status, 0) };
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
/// 4 GiB, so they go into a MAP_32BIT page.
fn int80_execve(path: &str, argv: &[String]) -> ! {
    const MAP_32BIT: i32 = 0x40;
    let page = unsafe {
        mmap(std::ptr::null_mut(), 65536, 3 /* RW */, 0x22 | MAP_32BIT /* PRIVATE|ANON */, -1, 0)
    };
    if page as isize == -1 {
        eprintln!("exec-helper: mmap: {}", std::io::Error::last_os_error());
        std::process::exit(126);
    }
    let base = page;
    let mut offset = 4096usize; // pointer array in the first 4 KiB, strings after
    let mut put = |s: &str| -> u32 {
        let at = unsafe { base.add(offset) };
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), at, s.len());
            *at.add(s.len()) = 0;
        }
        offset += s.len() + 1;
        at as u32
    };
    let path_ptr = put(path);
    let pointers = base as *mut u32;
    for (i, arg) in argv.iter().enumerate() {
        let p = put(arg);
        unsafe { *pointers.add(i) = p };
    }
    unsafe { *pointers.add(argv.len()) = 0 };
    let envp = unsafe { pointers.add(argv.len()) } as u32; // an empty list
    let result: i32;
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
}
