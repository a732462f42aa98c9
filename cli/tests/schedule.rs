//! The storm keeps its schedule at a rate the engine it replaced could not.
//! Alone in its test binary: it needs the machine's cores to itself (the
//! other test binaries run before or after it, never beside it).

use std::process::Command;

/// A server that answers every request it reads with the same short `200`,
/// with no HTTP machinery of its own: whatever keeps a storm from its
/// schedule is the storm's.
async fn bare_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut read = vec![0u8; 16 * 1024];
                // The end of the last read, for a request end split across two.
                let mut tail = Vec::new();
                loop {
                    let n = match socket.read(&mut read).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    tail.extend_from_slice(&read[..n]);
                    let ends = tail.windows(4).filter(|w| *w == b"\r\n\r\n").count();
                    let keep = tail.len().saturating_sub(3);
                    tail.drain(..keep);
                    if socket.write_all(&ANSWER.repeat(ends)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{address}/")
}

/// One 3 s storm at 10,000 sends a second: how many of its sends went out
/// 10 ms or more late, and how many it sent.
async fn late_sends(url: &str) -> (u64, u64, serde_json::Value) {
    let json = std::env::temp_dir().join(format!("flashtix-kept-{}.json", std::process::id()));
    let storm = tokio::task::spawn_blocking({
        let (json, url) = (json.clone(), url.to_string());
        move || {
            Command::new(env!("CARGO_BIN_EXE_flashtix"))
                .args([
                    "storm",
                    "--raw",
                    &url,
                    "--rate",
                    "10000",
                    "--duration",
                    "3s",
                ])
                .arg("--json")
                .arg(&json)
                .output()
                .expect("the storm runs")
        }
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&storm.stderr);
    assert_eq!(storm.status.code(), Some(0), "{said}");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON")).unwrap();
    std::fs::remove_file(&json).unwrap();
    let sends = results["sends"].as_u64().unwrap();
    assert_eq!(sends, 30_000, "{results:#}");
    assert_eq!(results["outcomes"]["accepted"], 30_000, "{results:#}");
    let behind = results["schedule"]["behind_sends"].as_u64().unwrap();
    (behind, sends, results["schedule"].clone())
}

/// 10,000 sends a second for 3 s, from the debug build, against a server
/// that costs next to nothing: the storm keeps to its schedule. (The rate is
/// what the debug build keeps, with room, on the slowest machine the tests
/// have run on: there it sends about 11,000 a second at most, so at 20,000
/// it falls behind. The 1% line and the release build's figures, 40,000 a
/// second, are the benchmark's, not a test's: the margin asked here is wide.)
///
/// A shared machine can stall both processes for a tenth of a second, which
/// makes a thousand sends late whatever the engine does; a stall only ever
/// makes sends later, never earlier, so the best of three runs is the
/// engine's own. An engine that cannot keep the rate is late in all three
/// (the one this replaced sent 94-97% late every time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_keeps_a_schedule_of_ten_thousand_sends_a_second() {
    let url = bare_server().await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        let (behind, sends, schedule) = late_sends(&url).await;
        if behind * 20 < sends {
            return;
        }
        runs.push(format!("{behind} of {sends} sends 10 ms late: {schedule}"));
    }
    panic!("late in each of three runs:\n{}", runs.join("\n"));
}
