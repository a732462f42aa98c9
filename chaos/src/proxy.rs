//! The TCP fault proxy: forwards a local port to a service, and breaks the
//! traffic the way networks break, switched at runtime with [`Proxy::set`]
//! (nothing restarts; connections stay open unless the fault is a reset).
//!
//! Each direction of a connection is a reader and a writer joined by a queue of
//! chunks, each chunk stamped with when it may be delivered: latency and
//! bandwidth delay delivery without holding up the reading, as a real link does.

use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What the proxy does to the traffic: a toxic, in toxiproxy's word.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Toxic {
    /// Every chunk arrives this much later, plus up to `jitter` more.
    Latency { delay: Duration, jitter: Duration },
    /// Connections are accepted and kept, but nothing goes through either way
    /// until the fault ends (then what was held is delivered, as TCP would).
    Blackhole,
    /// Open connections are reset (RST) and new ones are reset on accept.
    Reset,
    /// At most this many bytes a second each way, per connection.
    Bandwidth { bytes_per_second: u64 },
    /// Requests go through; replies are swallowed: the work happens, the caller
    /// never hears of it.
    DropResponses,
}

/// A running proxy; stops accepting when dropped (open connections end as
/// their ends close).
pub struct Proxy {
    address: SocketAddr,
    fault: watch::Sender<Option<Toxic>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on `listen` (port 0: any free port) and forwards to `upstream`
    /// (`host:port`).
    pub async fn start(listen: SocketAddr, upstream: impl Into<String>) -> io::Result<Self> {
        Self::balance(listen, vec![upstream.into()]).await
    }

    /// A load balancer: each new connection goes to the next of `upstreams`
    /// in turn, or the one after it if that one refuses (a killed server).
    pub async fn balance(listen: SocketAddr, upstreams: Vec<String>) -> io::Result<Self> {
        assert!(!upstreams.is_empty(), "a proxy needs somewhere to forward");
        let listener = TcpListener::bind(listen).await?;
        let address = listener.local_addr()?;
        let (fault, watching) = watch::channel(None);
        let upstreams: std::sync::Arc<[String]> = upstreams.into();
        let accepting = tokio::spawn(async move {
            let mut connection = 0u64;
            while let Ok((client, _)) = listener.accept().await {
                connection += 1;
                tokio::spawn(carry(
                    client,
                    upstreams.clone(),
                    watching.clone(),
                    connection,
                ));
            }
        });
        Ok(Self {
            address,
            fault,
            accepting,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Switches the fault (`None`: forward faithfully). Takes effect at once
    /// on every open connection.
    pub fn set(&self, fault: Option<Toxic>) {
        self.fault.send_replace(fault);
    }

    pub fn fault(&self) -> Option<Toxic> {
        *self.fault.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

type Faults = watch::Receiver<Option<Toxic>>;

fn current(faults: &Faults) -> Option<Toxic> {
    *faults.borrow()
}

/// Closes with RST instead of FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn until(faults: &mut Faults, wanted: impl Fn(&Option<Toxic>) -> bool) {
    if faults.wait_for(|fault| wanted(fault)).await.is_err() {
        // The proxy is gone: nothing will change any more.
        std::future::pending::<()>().await;
    }
}

async fn carry(
    client: TcpStream,
    upstreams: std::sync::Arc<[String]>,
    mut faults: Faults,
    connection: u64,
) {
    // A blackhole accepts and holds; it reaches the service once it ends.
    until(&mut faults, |f| *f != Some(Toxic::Blackhole)).await;
    if current(&faults) == Some(Toxic::Reset) {
        return reset(client);
    }
    // The first connection goes to the first upstream.
    let first = (connection - 1) as usize % upstreams.len();
    let mut server = None;
    for upstream in upstreams.iter().cycle().skip(first).take(upstreams.len()) {
        if let Ok(stream) = TcpStream::connect(upstream).await {
            server = Some(stream);
            break;
        }
    }
    let Some(mut server) = server else {
        return reset(client);
    };
    let mut client = client;
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let ended = {
        let (client_reads, client_writes) = client.split();
        let (server_reads, server_writes) = server.split();
        let requests = pump(
            client_reads,
            server_writes,
            faults.clone(),
            false,
            connection,
        );
        let replies = pump(
            server_reads,
            client_writes,
            faults.clone(),
            true,
            connection,
        );
        let (mut requests, mut replies) = (pin!(requests), pin!(replies));
        let (mut requests_done, mut replies_done) = (false, false);
        loop {
            let ended = tokio::select! {
                ended = &mut requests, if !requests_done => { requests_done = true; ended }
                ended = &mut replies, if !replies_done => { replies_done = true; ended }
            };
            if ended == Ended::Reset || (requests_done && replies_done) {
                break ended;
            }
        }
    };
    if ended == Ended::Reset {
        reset(client);
        reset(server);
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ended {
    Closed,
    Reset,
}

/// One direction: reads chunks, stamps when each may be delivered, delivers.
async fn pump<R, W>(
    mut reader: R,
    mut writer: W,
    faults: Faults,
    replies: bool,
    connection: u64,
) -> Ended
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let (chunks, mut queued) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let mut read_faults = faults.clone();
    let read = async move {
        let faults = &mut read_faults;
        let mut jitter = Jitter::new(connection * 2 + replies as u64);
        let mut line_free = Instant::now();
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            until(faults, |f| *f != Some(Toxic::Blackhole)).await;
            let read = tokio::select! {
                read = reader.read(&mut buffer) => read,
                () = until(faults, |f| *f == Some(Toxic::Reset)) => return Ended::Reset,
            };
            let n = match read {
                Ok(0) | Err(_) => return Ended::Closed,
                Ok(n) => n,
            };
            let now = Instant::now();
            let due = match current(faults) {
                Some(Toxic::Reset) => return Ended::Reset,
                Some(Toxic::DropResponses) if replies => continue,
                Some(Toxic::Latency {
                    delay,
                    jitter: most,
                }) => now + delay + jitter.up_to(most),
                Some(Toxic::Bandwidth { bytes_per_second }) => {
                    let sending =
                        Duration::from_secs_f64(n as f64 / bytes_per_second.max(1) as f64);
                    line_free = line_free.max(now) + sending;
                    line_free
                }
                _ => now,
            };
            if chunks.send((due, buffer[..n].to_vec())).await.is_err() {
                return Ended::Closed;
            }
        }
    };
    let mut faults = faults;
    let write = async move {
        while let Some((due, chunk)) = queued.recv().await {
            tokio::time::sleep_until(due).await;
            until(&mut faults, |f| *f != Some(Toxic::Blackhole)).await;
            match current(&faults) {
                Some(Toxic::Reset) => return Ended::Reset,
                Some(Toxic::DropResponses) if replies => continue,
                _ => {}
            }
            if writer.write_all(&chunk).await.is_err() {
                return Ended::Closed;
            }
        }
        let _ = writer.shutdown().await;
        Ended::Closed
    };
    let (mut read, mut write) = (pin!(read), pin!(write));
    tokio::select! {
        // The reader ending drops the queue's sender: the writer delivers
        // what is queued, then shuts its side.
        ended = &mut read => match ended {
            Ended::Reset => Ended::Reset,
            Ended::Closed => write.await,
        },
        ended = &mut write => ended,
    }
}

/// Jitter from a seeded sequence (splitmix64): no randomness crate needed.
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn up_to(&mut self, most: Duration) -> Duration {
        if most.is_zero() {
            return Duration::ZERO;
        }
        self.0 = flashtix_model::rng::next(self.0);
        most.mul_f64((self.0 >> 11) as f64 / (1u64 << 53) as f64)
    }
}
