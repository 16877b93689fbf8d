//! `wan-delay`: a TCP proxy that adds a fixed one-way delay in each direction, standing in for a
//! WAN link between two regions of the compose setup (this kernel has no netem).
//!
//!     wan-delay --delay-ms 40 7001=172.28.1.10:7001 7101=172.28.1.10:7101 ...
//!
//! Listens on every `PORT` and forwards to its `HOST:PORT`. Each chunk read from one side is
//! written to the other `delay` after it was read, so a round trip through the proxy costs twice
//! the delay on top of the real one, and throughput is not limited by it (chunks in flight
//! overlap, as on a long fat pipe).

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Chunks in flight per direction before the reader waits (bounds memory per connection).
const CHUNKS_IN_FLIGHT: usize = 1024;
const CHUNK_BYTES: usize = 64 * 1024;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut delay = None;
    let mut routes = Vec::new();
    while let Some(a) = args.next() {
        if a == "--delay-ms" {
            let ms: u64 = args.next().context("--delay-ms needs a value")?.parse().context("--delay-ms")?;
            delay = Some(Duration::from_millis(ms));
        } else {
            let (port, target) = a.split_once('=').ok_or_else(|| anyhow!("route {a:?} is not PORT=HOST:PORT"))?;
            routes.push((port.parse::<u16>().with_context(|| format!("port in {a:?}"))?, target.to_string()));
        }
    }
    let delay = delay.context("--delay-ms is required")?;
    if routes.is_empty() {
        bail!("no routes: give PORT=HOST:PORT arguments");
    }
    let mut tasks = Vec::new();
    for (port, target) in routes {
        let listener = TcpListener::bind(("0.0.0.0", port)).await.with_context(|| format!("listen on {port}"))?;
        println!("wan-delay: :{port} -> {target}, {} ms each way", delay.as_millis());
        tasks.push(tokio::spawn(serve(listener, target, delay)));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn serve(listener: TcpListener, target: String, delay: Duration) -> Result<()> {
    loop {
        let (client, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("wan-delay: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let target = target.clone();
        tokio::spawn(async move {
            // Connecting costs a round trip across the link too.
            tokio::time::sleep(delay * 2).await;
            match TcpStream::connect(&target).await {
                Ok(upstream) => relay(client, upstream, delay).await,
                Err(e) => eprintln!("wan-delay: connect {target}: {e}"),
            }
        });
    }
}

async fn relay(a: TcpStream, b: TcpStream, delay: Duration) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    tokio::join!(direction(ar, bw, delay), direction(br, aw, delay));
}

/// Copies one direction, each chunk released `delay` after it was read; closes the writer once
/// the reader ends and everything read has been written.
async fn direction(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now() + delay, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
