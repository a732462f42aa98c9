//! The fault proxy against a real TCP service (an echo server that counts what
//! it received): each fault does what it says, and switches off again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flashtix_chaos::proxy::{Proxy, Toxic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

/// Echoes every byte back; counts the bytes it got.
async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    counter.fetch_add(n, Ordering::SeqCst);
                    if stream.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (address, received)
}

async fn proxied() -> (Proxy, Arc<AtomicUsize>) {
    let (service, received) = echo_server().await;
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), service.to_string())
        .await
        .unwrap();
    (proxy, received)
}

/// Sends `message` and reads as many bytes back, within `limit`.
async fn round_trip(stream: &mut TcpStream, message: &[u8], limit: Duration) -> Option<Vec<u8>> {
    stream.write_all(message).await.ok()?;
    let mut back = vec![0u8; message.len()];
    timeout(limit, stream.read_exact(&mut back))
        .await
        .ok()?
        .ok()?;
    Some(back)
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn without_a_fault_bytes_go_through_both_ways() {
    let (proxy, received) = proxied().await;
    let mut stream = TcpStream::connect(proxy.address()).await.unwrap();
    let message: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    assert_eq!(
        round_trip(&mut stream, &message, SECOND).await,
        Some(message)
    );
    assert_eq!(received.load(Ordering::SeqCst), 200_000);
}

#[tokio::test]
async fn latency_delays_every_reply_and_switches_off() {
    let (proxy, _) = proxied().await;
    let mut stream = TcpStream::connect(proxy.address()).await.unwrap();
    proxy.set(Some(Toxic::Latency {
        delay: Duration::from_millis(150),
        jitter: Duration::from_millis(20),
    }));
    let started = Instant::now();
    assert!(round_trip(&mut stream, b"ping", SECOND).await.is_some());
    // Once on the way there, once on the way back.
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    proxy.set(None);
    let started = Instant::now();
    assert!(round_trip(&mut stream, b"ping", SECOND).await.is_some());
    assert!(
        started.elapsed() < Duration::from_millis(290),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_blackhole_holds_everything_until_it_ends() {
    let (proxy, received) = proxied().await;
    let mut open = TcpStream::connect(proxy.address()).await.unwrap();
    assert!(round_trip(&mut open, b"before", SECOND).await.is_some());
    proxy.set(Some(Toxic::Blackhole));

    let mut new = TcpStream::connect(proxy.address()).await.expect("accepted");
    assert_eq!(
        round_trip(&mut open, b"held", Duration::from_millis(300)).await,
        None
    );
    assert_eq!(
        round_trip(&mut new, b"new", Duration::from_millis(300)).await,
        None
    );
    assert_eq!(
        received.load(Ordering::SeqCst),
        6,
        "nothing reached the service"
    );

    proxy.set(None);
    let mut back = [0u8; 4];
    timeout(SECOND, open.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"held");
    let mut back = [0u8; 3];
    timeout(SECOND, new.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"new");
}

#[tokio::test]
async fn a_reset_breaks_open_connections_and_refuses_new_ones() {
    let (proxy, _) = proxied().await;
    let mut open = TcpStream::connect(proxy.address()).await.unwrap();
    assert!(round_trip(&mut open, b"hello", SECOND).await.is_some());

    proxy.set(Some(Toxic::Reset));
    let mut buffer = [0u8; 8];
    let read = timeout(SECOND, open.read(&mut buffer))
        .await
        .expect("answered at once");
    assert!(
        matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{read:?}"
    );
    let mut new = TcpStream::connect(proxy.address()).await.unwrap();
    let read = timeout(SECOND, new.read(&mut buffer))
        .await
        .expect("answered at once");
    assert!(read.is_err(), "a new connection is reset too: {read:?}");

    proxy.set(None);
    let mut after = TcpStream::connect(proxy.address()).await.unwrap();
    assert!(round_trip(&mut after, b"again", SECOND).await.is_some());
}

#[tokio::test]
async fn bandwidth_caps_the_bytes_a_second() {
    let (proxy, _) = proxied().await;
    let mut stream = TcpStream::connect(proxy.address()).await.unwrap();
    proxy.set(Some(Toxic::Bandwidth {
        bytes_per_second: 100_000,
    }));
    let started = Instant::now();
    let message = vec![7u8; 50_000];
    assert!(round_trip(&mut stream, &message, 3 * SECOND)
        .await
        .is_some());
    // 50 kB at 100 kB/s: half a second there, half back (pipelined).
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn dropped_responses_mean_the_work_happened_unheard() {
    let (proxy, received) = proxied().await;
    let mut stream = TcpStream::connect(proxy.address()).await.unwrap();
    proxy.set(Some(Toxic::DropResponses));

    assert_eq!(
        round_trip(&mut stream, b"order", Duration::from_millis(300)).await,
        None
    );
    assert_eq!(received.load(Ordering::SeqCst), 5, "the request arrived");

    proxy.set(None);
    assert_eq!(
        round_trip(&mut stream, b"again", SECOND).await.as_deref(),
        Some(&b"again"[..]),
        "the connection still works, and the swallowed reply stays lost"
    );
}
