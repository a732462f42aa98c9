//! The real binary under SIGTERM: stops taking requests, finishes the ones in
//! flight, exits 0, and every order it committed was answered.

use std::collections::HashSet;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashtix_server::runtime::config::Namespace;
use reqwest::StatusCode;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::helpers::{
    buyer_token, eventually, new_namespace, organizer_token, start_server_binary, test_database_url,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_orders_and_exits_zero() {
    let (namespace, server, address) = fresh_server(&["--role", "api"]).await;
    let client = reqwest::Client::new();
    let event_id = create_event(&client, &address, "last call", 1000).await;

    let answered = Arc::new(AtomicUsize::new(0));
    let fifty_answered = Arc::new(Notify::new());
    let mut buyers = JoinSet::new();
    for i in 0..400 {
        let (client, address) = (client.clone(), address.clone());
        let (answered, fifty_answered) = (Arc::clone(&answered), Arc::clone(&fifty_answered));
        buyers.spawn(async move {
            let response = client
                .post(format!("{address}/orders"))
                .bearer_auth(buyer_token(&format!("u{i}")))
                .header("Idempotency-Key", format!("k{i}"))
                .json(&serde_json::json!({"event_id": event_id, "user_id": format!("u{i}"), "quantity": 1}))
                .send()
                .await;
            if answered.fetch_add(1, Ordering::SeqCst) + 1 == 50 {
                fifty_answered.notify_one();
            }
            match response {
                Ok(response) if response.status() == StatusCode::ACCEPTED => {
                    let body: serde_json::Value = response.json().await.ok()?;
                    Some(body["order_id"].as_str()?.to_owned())
                }
                _ => None,
            }
        });
    }
    fifty_answered.notified().await;
    terminate(&server);
    let accepted: HashSet<String> = buyers.join_all().await.into_iter().flatten().collect();
    let exit = exited(server).await;

    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        accepted.len() >= 50,
        "{} accepted before the end",
        accepted.len()
    );
    let pool = sale_pool(&namespace);
    let committed: HashSet<String> = sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM orders")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|id| id.to_string())
        .collect();
    assert_eq!(
        committed, accepted,
        "every committed order was answered, and only those"
    );
}

/// A relay between passes (the longest pause, 10 s) stops at once on SIGTERM:
/// the pause gives way to the stop, well inside the 10 s after which
/// background work is cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_relays_pause_between_passes() {
    let (namespace, server, _) = fresh_server(&["--role", "relay", "--relay-ms", "10000"]).await;
    let pool = sale_pool(&namespace);
    // The server migrated before it said it was listening. Once this row is
    // published, the relay's pass is over and its pause has begun.
    sqlx::query(
        "INSERT INTO outbox (message_id, topic, payload)
         VALUES (gen_random_uuid(), 'order.created', '{\"orders\": []}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    eventually(Duration::from_secs(10), || async {
        let waiting: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&pool)
                .await
                .map_err(|error| error.to_string())?;
        (waiting == 0)
            .then_some(())
            .ok_or_else(|| "the row is not published yet".to_string())
    })
    .await;

    let stopping = Instant::now();
    terminate(&server);
    let exit = exited(server).await;

    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        stopping.elapsed()
    );
}

/// Streams never end by themselves, yet a server with watchers stops at once
/// on SIGTERM: their streams end (a client reconnects to another process),
/// so the wait for open answers is not forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_stock_streams_and_the_server_exits() {
    let (_namespace, server, address) = fresh_server(&["--role", "api"]).await;
    let client = reqwest::Client::new();
    let event_id = create_event(&client, &address, "watched", 10).await;
    let stream_url = format!("{address}/events/{event_id}/stream");
    let mut watchers = Vec::new();
    for _ in 0..3 {
        let mut watcher = client.get(&stream_url).send().await.unwrap();
        assert_eq!(watcher.status(), StatusCode::OK);
        // The first message is here: the stream is open.
        let mut read = String::new();
        while !read.contains("event: snapshot") {
            let chunk = watcher.chunk().await.unwrap().expect("the snapshot");
            read.push_str(&String::from_utf8_lossy(&chunk));
        }
        watchers.push(watcher);
    }

    let stopping = Instant::now();
    terminate(&server);
    let pid = server.id().to_string();
    let Ok(exit) = tokio::time::timeout(Duration::from_secs(10), exited(server)).await else {
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        panic!("still running 10 s after SIGTERM, its streams open");
    };
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        stopping.elapsed()
    );
    for mut watcher in watchers {
        // Whatever was still on its way, then a clean end of the answer.
        loop {
            match watcher.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(error) => panic!("the stream broke instead of ending: {error}"),
            }
        }
    }
}

/// Creates an event of `tickets` named `name` at the server at `address`;
/// returns its id.
async fn create_event(client: &reqwest::Client, address: &str, name: &str, tickets: i64) -> i64 {
    let event: serde_json::Value = client
        .post(format!("{address}/events"))
        .bearer_auth(organizer_token())
        .json(&serde_json::json!({"name": name, "total_tickets": tickets, "price_cents": 100}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    event["id"].as_i64().unwrap()
}

/// The real binary with `args`, on a namespace of its own.
async fn fresh_server(args: &[&str]) -> (Namespace, Child, String) {
    flashtix_server::runtime::db::create_database_if_missing(&test_database_url())
        .await
        .unwrap();
    let namespace = new_namespace();
    let (server, address) = start_server_binary(&namespace, args);
    (namespace, server, address)
}

/// Sends SIGTERM to the server.
fn terminate(server: &Child) {
    let terminated = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
}

/// Waits for the server to exit.
async fn exited(mut server: Child) -> ExitStatus {
    tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap()
        .unwrap()
}

/// A pool on the server's sale.
fn sale_pool(namespace: &Namespace) -> PgPool {
    flashtix_server::runtime::db::pool(
        &test_database_url(),
        namespace,
        2,
        flashtix_server::runtime::db::Purpose::General,
    )
    .unwrap()
}
