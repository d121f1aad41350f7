//! Load for a docker API socket, for the gate's load test and bench: CLIENTS connections at
//! once, each sending REQUESTS requests on its keep-alive connection (hyper's client), the
//! paths taken in turn. Prints one line the host parses:
//!
//!     requests=N ok=N refused=N other=N errors=N p50_us=N p99_us=N mean_us=N [all_us=A,B,...]
//!
//! (ok: 2xx; refused: 403; other: any other status; errors: a connection or protocol
//! failure, after which that client reconnects; `all_us`, with `--all`: every request's
//! latency in the order sent, the first client's first).
//!
//! `upload` streams a tar of a Dockerfile (`FROM local/busybox`) and a file of MIB MiB of
//! zeros as the body of `POST PATH` (a build context: `/v1.41/build`), with its length,
//! and times it from the first byte sent to the end of dockerd's answer:
//!
//!     bytes=N status=S ok=0|1 headers_ns=T ns=T mib_s=X
//!
//! (ok: a 2xx status and no `errorDetail` in the answer's JSON stream).
//!
//! Usage: api-load [--all] SOCKET CLIENTS REQUESTS PATH...
//!        api-load upload SOCKET MIB PATH

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::{
    Request,
    body::{Body, Frame, SizeHint},
};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

#[derive(Default)]
struct Tally {
    ok: u64,
    refused: u64,
    other: u64,
    errors: u64,
    latencies_us: Vec<u64>,
}

async fn client(socket: String, requests: usize, paths: Vec<String>) -> Tally {
    let mut tally = Tally::default();
    let mut sender = None;
    for i in 0..requests {
        if sender.is_none() {
            sender = connect(&socket).await.ok();
        }
        let Some(open) = sender.as_mut() else {
            tally.errors += 1;
            continue;
        };
        let path = &paths[i % paths.len()];
        let request = Request::get(path.as_str()).header("host", "docker").body(Empty::<Bytes>::new());
        let Ok(request) = request else {
            tally.errors += 1;
            continue;
        };
        let started = Instant::now();
        let answer = async {
            let response = open.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        }
        .await;
        if let Ok(status) = answer {
            tally.latencies_us.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
            match status.as_u16() {
                200..=299 => tally.ok += 1,
                403 => tally.refused += 1,
                _ => tally.other += 1,
            }
        } else {
            tally.errors += 1;
            sender = None;
        }
    }
    tally
}

async fn connect(socket: &str) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let stream = UnixStream::connect(socket).await.with_context(|| format!("connect {socket}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// A 512-byte ustar header of a regular file.
fn tar_header(name: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let mut put = |at: usize, text: &str| h[at..at + text.len()].copy_from_slice(text.as_bytes());
    put(100, "0000644\0");
    put(108, "0000000\0");
    put(116, "0000000\0");
    put(124, &format!("{size:011o}\0"));
    put(136, "00000000000\0");
    put(156, "0");
    put(257, "ustar\0");
    put(263, "00");
    // The checksum is computed with its own field as spaces.
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// A build context streamed without holding it: the Dockerfile, then the big file's
/// header, `chunks` times the same 64 KiB of zeros, the end-of-archive blocks.
struct Context64 {
    head: Option<Bytes>,
    chunk: Bytes,
    chunks: u64,
    tail: Option<Bytes>,
}

const CHUNK: usize = 64 * 1024;

impl Context64 {
    fn new(mib: u64) -> Context64 {
        let dockerfile = b"FROM local/busybox\n";
        let mut head = tar_header("Dockerfile", dockerfile.len() as u64).to_vec();
        head.extend_from_slice(dockerfile);
        head.resize(1024, 0);
        head.extend_from_slice(&tar_header("big", mib * 1024 * 1024));
        Context64 {
            head: Some(Bytes::from(head)),
            chunk: Bytes::from(vec![0u8; CHUNK]),
            chunks: mib * 16,
            tail: Some(Bytes::from(vec![0u8; 1024])),
        }
    }

    fn remaining(&self) -> u64 {
        let len = |b: &Option<Bytes>| b.as_ref().map_or(0, |b| b.len() as u64);
        len(&self.head) + self.chunks * CHUNK as u64 + len(&self.tail)
    }
}

impl Body for Context64 {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let next = if let Some(head) = this.head.take() {
            Some(head)
        } else if this.chunks > 0 {
            this.chunks -= 1;
            Some(this.chunk.clone())
        } else {
            this.tail.take()
        };
        Poll::Ready(next.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining())
    }
}

async fn upload(socket: &str, mib: u64, path: &str) -> Result<()> {
    let stream = UnixStream::connect(socket).await.with_context(|| format!("connect {socket}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let body = Context64::new(mib);
    let bytes = body.remaining();
    let request = Request::post(path)
        .header("host", "docker")
        .header("content-type", "application/x-tar")
        .body(body)?;
    let started = Instant::now();
    let response = sender.send_request(request).await?;
    let headers_ns = started.elapsed().as_nanos();
    let status = response.status();
    let answer = response.into_body().collect().await?.to_bytes();
    let ns = started.elapsed().as_nanos();
    let ok = status.is_success() && !answer.windows(11).any(|w| w == b"errorDetail");
    #[expect(clippy::cast_precision_loss, reason = "a throughput figure")]
    let mib_s = bytes as f64 / (1024.0 * 1024.0) / (ns as f64 / 1e9);
    println!(
        "bytes={bytes} status={} ok={} headers_ns={headers_ns} ns={ns} mib_s={mib_s:.2}",
        status.as_u16(),
        u8::from(ok)
    );
    if !ok {
        eprintln!("api-load: upload answered {status}: {}", String::from_utf8_lossy(&answer));
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("upload") {
        if args.len() != 4 {
            bail!("usage: api-load upload SOCKET MIB PATH");
        }
        let mib: u64 = args[2].parse().context("MIB")?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        return runtime.block_on(upload(&args[1], mib, &args[3]));
    }
    let all = args.first().map(String::as_str) == Some("--all");
    if all {
        args.remove(0);
    }
    if args.len() < 4 {
        bail!("usage: api-load [--all] SOCKET CLIENTS REQUESTS PATH... | upload SOCKET MIB PATH");
    }
    let socket = args[0].clone();
    let clients: usize = args[1].parse().context("CLIENTS")?;
    let requests: usize = args[2].parse().context("REQUESTS")?;
    let paths: Vec<String> = args[3..].to_vec();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let tallies = runtime.block_on(async {
        let tasks: Vec<_> =
            (0..clients).map(|_| tokio::spawn(client(socket.clone(), requests, paths.clone()))).collect();
        let mut tallies = Vec::new();
        for task in tasks {
            tallies.push(tokio::time::timeout(Duration::from_mins(10), task).await);
        }
        tallies
    });
    let mut total = Tally::default();
    let mut in_order = Vec::new();
    for tally in tallies {
        match tally {
            Ok(Ok(t)) => {
                total.ok += t.ok;
                total.refused += t.refused;
                total.other += t.other;
                total.errors += t.errors;
                in_order.extend_from_slice(&t.latencies_us);
                total.latencies_us.extend(t.latencies_us);
            }
            _ => total.errors += 1,
        }
    }
    total.latencies_us.sort_unstable();
    let count = u64::try_from(total.latencies_us.len()).unwrap_or(u64::MAX).max(1);
    let mean = total.latencies_us.iter().sum::<u64>() / count;
    let every = if all {
        format!(" all_us={}", in_order.iter().map(ToString::to_string).collect::<Vec<_>>().join(","))
    } else {
        String::new()
    };
    println!(
        "requests={} ok={} refused={} other={} errors={} p50_us={} p99_us={} mean_us={mean}{every}",
        total.ok + total.refused + total.other + total.errors,
        total.ok,
        total.refused,
        total.other,
        total.errors,
        percentile(&total.latencies_us, 50),
        percentile(&total.latencies_us, 99)
    );
    Ok(())
}
