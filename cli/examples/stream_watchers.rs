//! Holds many clients on an event's stock stream and measures what they are
//! told: how many stayed, how many messages each read, and the lag from the
//! moment a state was committed (`changed_at`) to its message arriving
//! (snapshots aside: their state may be older than the client).
//! Runs on the sale's machine (one clock). `bench/stream.sh` drives it.
//!
//! ```sh
//! cargo run --release -p flashtix --example stream_watchers -- \
//!     http://127.0.0.1:8080 EVENT_ID CLIENTS SECONDS
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Connections opened at once, so the server's listen queue never overflows.
const OPENING_AT_ONCE: usize = 256;

/// What one client saw.
struct Seen {
    messages: u64,
    dropped: bool,
    /// Microseconds from commit to arrival.
    lag: Histogram<u64>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, event, clients, seconds] = args.as_slice() else {
        bail!("usage: stream_watchers http://HOST:PORT EVENT_ID CLIENTS SECONDS");
    };
    let address: SocketAddr = target
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .context("the target is http://IP:PORT")?;
    let event: i64 = event.parse().context("EVENT_ID")?;
    let clients: usize = clients.parse().context("CLIENTS")?;
    let until = tokio::time::Instant::now() + Duration::from_secs(seconds.parse()?);

    let mut watching = JoinSet::new();
    let mut failed = 0;
    for start in (0..clients).step_by(OPENING_AT_ONCE) {
        let mut opening = JoinSet::new();
        for _ in start..clients.min(start + OPENING_AT_ONCE) {
            opening.spawn(open(address, event));
        }
        while let Some(opened) = opening.join_next().await {
            match opened? {
                Ok(stream) => {
                    watching.spawn(watch(stream, until));
                }
                Err(error) => {
                    failed += 1;
                    if failed == 1 {
                        eprintln!("a client could not open its stream: {error:#}");
                    }
                }
            }
        }
    }
    println!("watchers: {} open, {failed} failed", clients - failed);

    let mut lag = Histogram::<u64>::new(3)?;
    let (mut messages, mut dropped, mut ended) = (0u64, 0u64, 0u64);
    while let Some(seen) = watching.join_next().await {
        match seen? {
            Ok(seen) => {
                messages += seen.messages;
                dropped += u64::from(seen.dropped);
                lag.add(&seen.lag)?;
            }
            Err(_) => ended += 1,
        }
    }
    let ms = |q: f64| lag.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "changes told: {messages} ({:.1} a client); dropped for reading slowly: {dropped}; \
         streams that broke: {ended}; the watchers' own CPU: {:.1} s",
        messages as f64 / (clients - failed).max(1) as f64,
        own_cpu_seconds()
    );
    println!(
        "lag from commit to client: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
        ms(0.5),
        ms(0.99),
        lag.max() as f64 / 1000.0,
        lag.len()
    );
    Ok(())
}

/// Opens one stream and reads its answer's head.
async fn open(address: SocketAddr, event: i64) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let mut stream = TcpStream::connect(address).await?;
    stream
        .write_all(
            format!(
                "GET /events/{event}/stream HTTP/1.1\r\nHost: {address}\r\n\
                 Accept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            bail!("closed before its head");
        }
        head.extend_from_slice(&buffer[..read]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        bail!(
            "answered {}",
            String::from_utf8_lossy(&head[..head.len().min(40)])
        );
    }
    Ok((stream, head))
}

/// Reads one stream until `until`, timing every message.
async fn watch(
    (mut stream, already): (TcpStream, Vec<u8>),
    until: tokio::time::Instant,
) -> anyhow::Result<Seen> {
    let mut seen = Seen {
        messages: 0,
        dropped: false,
        lag: Histogram::new(3)?,
    };
    let mut text = already;
    let mut buffer = vec![0u8; 8192];
    loop {
        let read = tokio::select! {
            read = stream.read(&mut buffer) => read?,
            () = tokio::time::sleep_until(until) => return Ok(seen),
        };
        if read == 0 {
            return Ok(seen);
        }
        let now = Utc::now();
        text.extend_from_slice(&buffer[..read]);
        while let Some(end) = text.windows(2).position(|w| w == b"\n\n") {
            let message: Vec<u8> = text.drain(..end + 2).collect();
            let message = String::from_utf8_lossy(&message);
            if message.contains(": dropped") {
                seen.dropped = true;
            }
            // A snapshot's state may be older than the client: not a lag.
            if message.contains("event: snapshot") {
                continue;
            }
            if let Some(at) = changed_at(&message) {
                seen.messages += 1;
                let lag = (now - at).num_microseconds().unwrap_or(0).max(0);
                seen.lag.record(lag as u64)?;
            }
        }
    }
}

/// The `changed_at` of a message's data, if it has one.
fn changed_at(message: &str) -> Option<DateTime<Utc>> {
    let data = message.lines().find_map(|l| l.strip_prefix("data: "))?;
    let at = data.split("\"changed_at\":\"").nth(1)?.split('"').next()?;
    at.parse().ok()
}

/// This process's CPU time so far, user and system.
fn own_cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) else {
        return 0.0;
    };
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    seconds(usage.user_time()) + seconds(usage.system_time())
}
