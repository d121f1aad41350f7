//! A tiny stand-in for the docker daemon's HTTP API on a unix socket, for the VM tests.
//!
//! It answers what `docker ps` and `docker version` need (and `GET /_ping`: 200 `OK`),
//! answers 404 to everything else, and appends one line per request to a log:
//! `uid=<peer uid> <METHOD> <path>` for the unix socket, `tcp <METHOD> <path>` for the
//! optional TCP listener, so a test can prove that a denied command never reached the API
//! (and who did reach it).
//!
//! Usage: mock-docker-api SOCKET LOG [GID] [--tcp ADDR:PORT]

use std::{
    fs::OpenOptions,
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    os::unix::{
        fs::PermissionsExt,
        net::{UnixListener, UnixStream},
    },
    sync::{Arc, Mutex},
};

const API_VERSION: &str = "1.47";

fn main() -> anyhow::Result<()> {
    const USAGE: &str = "usage: mock-docker-api SOCKET LOG [GID] [--tcp ADDR:PORT]";
    let mut positional = Vec::new();
    let mut tcp = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--tcp" {
            tcp = Some(args.next().ok_or_else(|| anyhow::anyhow!("--tcp needs ADDR:PORT; {USAGE}"))?);
        } else {
            positional.push(arg);
        }
    }
    let mut positional = positional.into_iter();
    let socket = positional.next().ok_or_else(|| anyhow::anyhow!("{USAGE}"))?;
    let log_path = positional.next().ok_or_else(|| anyhow::anyhow!("missing LOG; {USAGE}"))?;
    let gid: Option<u32> = positional.next().map(|g| g.parse()).transpose()?;
    if positional.next().is_some() {
        anyhow::bail!("{USAGE}");
    }
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(&socket, Some(0), Some(gid))?;
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660))?;
    let log = Arc::new(Mutex::new(OpenOptions::new().create(true).append(true).open(&log_path)?));
    if let Some(address) = tcp {
        let tcp_listener = TcpListener::bind(&address)?;
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for stream in tcp_listener.incoming() {
                let Ok(stream) = stream else { continue };
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let Ok(reader) = stream.try_clone() else { return };
                    let _ = serve(reader, stream, "tcp", &log);
                });
            }
        });
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            let who = format!("uid={}", peer_uid(&stream));
            let Ok(reader) = stream.try_clone() else { return };
            let _ = serve(reader, stream, &who, &log);
        });
    }
    Ok(())
}

fn peer_uid(stream: &UnixStream) -> i64 {
    let mut cred = libc_ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = size_of::<libc_ucred>() as u32;
    // SAFETY: getsockopt(SO_PEERCRED) writes at most `len` bytes into `cred`.
    let rc = unsafe {
        getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            1,  /* SOL_SOCKET */
            17, /* SO_PEERCRED */
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    if rc == 0 { cred.uid as i64 } else { -1 }
}

#[repr(C)]
struct libc_ucred {
    pid: i32,
    uid: u32,
    gid: u32,
}

unsafe extern "C" {
    fn getsockopt(fd: i32, level: i32, name: i32, value: *mut std::ffi::c_void, len: *mut u32) -> i32;
}

/// Serves HTTP/1.x requests on one connection; `who` starts each log line.
fn serve(
    reader: impl Read,
    mut writer: impl Write,
    who: &str,
    log: &Mutex<std::fs::File>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(reader);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        // HTTP/1.0 (curl -0, a hand-written request through socat): one response, then close.
        let close_after = parts.next() == Some("HTTP/1.0");
        let mut content_length = 0usize;
        let mut chunked = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        if chunked {
            skip_chunked(&mut reader)?;
        } else {
            let mut body = vec![0; content_length];
            reader.read_exact(&mut body)?;
        }
        {
            let mut log = log.lock().unwrap();
            writeln!(log, "{who} {method} {target}")?;
            log.flush()?;
        }
        let (status, body) = respond(&method, &target);
        let response = format!(
            "HTTP/1.1 {status}\r\nApi-Version: {API_VERSION}\r\nDocker-Experimental: false\r\nOstype: linux\r\nServer: mock-docker-api\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        writer.write_all(response.as_bytes())?;
        if method != "HEAD" {
            writer.write_all(body.as_bytes())?;
        }
        writer.flush()?;
        if close_after {
            return Ok(());
        }
    }
}

fn skip_chunked(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk)?;
        if size == 0 {
            return Ok(());
        }
    }
}

fn respond(method: &str, target: &str) -> (&'static str, String) {
    let path = target.split('?').next().unwrap_or("");
    // Strip the /v1.xx prefix the client adds after version negotiation.
    let path = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            rest.find('/').map_or("/", |i| &rest[i..])
        }
        _ => path,
    };
    match (method, path) {
        ("GET" | "HEAD", "/_ping") => ("200 OK", "OK".into()),
        ("GET", "/version") => (
            "200 OK",
            format!(
                r#"{{"Platform":{{"Name":"mock"}},"Version":"28.0.0","ApiVersion":"{API_VERSION}","MinAPIVersion":"1.24","GitCommit":"mock","GoVersion":"go1.23","Os":"linux","Arch":"amd64","KernelVersion":"mock","BuildTime":"2025-01-01T00:00:00.000000000+00:00","Components":[]}}"#
            ),
        ),
        ("GET", "/containers/json" | "/images/json") => ("200 OK", "[]".into()),
        // Every container exists and runs, so a client gets as far as creating an exec.
        ("GET", p) if p.starts_with("/containers/") && p.ends_with("/json") => {
            let name = &p["/containers/".len()..p.len() - "/json".len()];
            (
                "200 OK",
                format!(
                    r#"{{"Id":"{name}","Name":"/{name}","State":{{"Running":true,"Status":"running"}},"Config":{{"Tty":false,"Image":"mock"}}}}"#
                ),
            )
        }
        ("POST", p) if p.starts_with("/containers/") && p.ends_with("/exec") => {
            ("201 Created", r#"{"Id":"mock-exec"}"#.into())
        }
        _ => ("404 Not Found", r#"{"message":"mock-docker-api: no such object"}"#.into()),
    }
}
