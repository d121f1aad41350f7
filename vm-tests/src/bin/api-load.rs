//! Load for a docker API socket, for the gate's load test and bench: CLIENTS connections at
//! once, each sending REQUESTS requests on its keep-alive connection (hyper's client), the
//! paths taken in turn. Prints one line the host parses:
//!
//!   `requests=N ok=N refused=N other=N errors=N p50_us=N p99_us=N`
//!
//! (ok: 2xx; refused: 403; other: any other status; errors: a connection or protocol
//! failure, after which that client reconnects).
//!
//! Usage: api-load SOCKET CLIENTS REQUESTS PATH...

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
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

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        bail!("usage: api-load SOCKET CLIENTS REQUESTS PATH...");
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
    for tally in tallies {
        match tally {
            Ok(Ok(t)) => {
                total.ok += t.ok;
                total.refused += t.refused;
                total.other += t.other;
                total.errors += t.errors;
                total.latencies_us.extend(t.latencies_us);
            }
            _ => total.errors += 1,
        }
    }
    total.latencies_us.sort_unstable();
    println!(
        "requests={} ok={} refused={} other={} errors={} p50_us={} p99_us={}",
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
