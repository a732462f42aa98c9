//! The storm's live dashboard in a real browser: headless Chromium, driven
//! through its DevTools protocol by `scripts/browser.py`, reads the page's
//! DOM every half second. While the storm runs its counters advance; at the
//! end the page shows the storm's own JSON figures. A page whose stream
//! stops is caught by the same judgement.

use std::process::Command;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use flashtix_testkit::eventually;
use serde_json::{json, Value};

use crate::common::{assert_exit, stderr, Sale};

/// What the test reads off the page each time: the live counters, the
/// status, and the final figures once shown.
const SAMPLE: &str = r##"(() => {
  const text = (selector) => document.querySelector(selector).textContent;
  const rows = (table) => Object.fromEntries([...document.querySelectorAll(`${table} tr[data-outcome]`)]
    .map((row) => [row.dataset.outcome, Number(row.querySelector(".count").textContent)]));
  return {
    status: text("#status"),
    sent: Number(text("#sent")),
    answered: Number(text("#answered")),
    in_flight: Number(text("#in-flight")),
    behind: Number(text("#behind")),
    outcomes: rows("#outcomes"),
    finished: !document.getElementById("final").hidden,
    attempts: Number(text('[data-final="attempts"]')),
    behind_sends: Number(text('[data-final="behind_sends"]')),
    verdict: text('[data-final="verdict"]'),
    final_outcomes: rows("#final-outcomes"),
    seat_maps: document.querySelectorAll("canvas[data-map]").length,
  };
})()"##;

/// Opens `url` in headless Chromium and samples the page every half second
/// until it shows its final figures or `limit` seconds pass; the samples,
/// and whether the figures came. A screenshot goes to `screenshot`.
fn browse(url: &str, limit: u64, screenshot: &str) -> (Vec<Value>, bool) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/browser.py");
    let run = Command::new("python3")
        .args([script, "--url", url, "--sample", SAMPLE, "--every", "0.5"])
        .args(["--until", "!document.getElementById('final').hidden"])
        .args(["--limit", &limit.to_string(), "--screenshot", screenshot])
        .output()
        .expect("python3 runs scripts/browser.py (Chromium: .ci/run installs it)");
    let samples = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|sample| sample["value"].clone())
        .filter(|value| value.get("status").is_some())
        .collect();
    match run.status.code() {
        Some(0) => (samples, true),
        Some(3) => (samples, false),
        _ => panic!("the browser failed: {}", stderr(&run)),
    }
}

/// Whether the page followed the storm whose JSON is `storm`: its answers
/// grew while it was live, and it ended on the storm's figures.
fn followed(samples: &[Value], finished: bool, storm: &Value) -> Result<(), String> {
    let live: Vec<u64> = samples
        .iter()
        .filter(|sample| sample["status"] == "live")
        .filter_map(|sample| sample["answered"].as_u64())
        .collect();
    let rises = live.windows(2).filter(|pair| pair[1] > pair[0]).count();
    if rises < 2 {
        return Err(format!("the answers did not advance while live: {live:?}"));
    }
    let last = samples.last().ok_or("no sample")?;
    if !finished || last["finished"] != true {
        return Err(format!("the page never showed the final figures: {last}"));
    }
    let told: Value = storm["outcomes"]
        .as_object()
        .ok_or("the storm's JSON has its outcomes")?
        .iter()
        .filter(|(_, count)| count.as_u64() != Some(0))
        .map(|(outcome, count)| (outcome.clone(), count.clone()))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let expected = [
        ("attempts", storm["attempts"].clone()),
        // The live counters end where the storm's document does.
        ("sent", storm["sends"].clone()),
        ("answered", storm["attempts"].clone()),
        ("in_flight", json!(0)),
        ("behind", storm["schedule"]["behind_sends"].clone()),
        ("behind_sends", storm["schedule"]["behind_sends"].clone()),
        ("verdict", storm["check"]["verdict"].clone()),
        ("final_outcomes", told.clone()),
        ("outcomes", told),
    ];
    for (figure, want) in expected {
        if last[figure] != want {
            return Err(format!(
                "{figure}: the page shows {}, the storm's JSON {want}",
                last[figure]
            ));
        }
    }
    Ok(())
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Where the screenshot is kept for people to look at.
fn artifact(name: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(dir).unwrap();
    dir.join(name).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_a_storm_in_a_browser_and_ends_on_its_figures() {
    let sale = Sale::new().await;
    let (events, _) = sale.reset(&[
        "--seating",
        "A:10x20@9000,GA:300@3000",
        "--max-per-user",
        "6",
    ]);
    let event = events[0]["id"].to_string();
    let server = sale.serve("all");
    let (json_file, _) = sale.json("storm.json");
    let address = format!("127.0.0.1:{}", free_port());
    let args = format!(
        "storm --target {} --event {event} --rate 150 --buyers 2000 --duration 6s \
         --quantity 1:50,2:50 --seat-retry 0.5 --json {json_file} \
         --dashboard {address} --dashboard-linger 2s",
        server.url
    );
    let storming = {
        let sale = sale.clone();
        tokio::spawn(async move {
            let args: Vec<&str> = args.split_whitespace().collect();
            sale.run_in_background(&args).await
        })
    };
    let url = format!("http://{address}/");
    eventually(Duration::from_secs(30), || async {
        match reqwest::get(&url).await {
            Ok(page) if page.status().is_success() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let screenshot = artifact("dashboard.png");
    let page = url.clone();
    let (samples, finished) = tokio::task::spawn_blocking(move || browse(&page, 90, &screenshot))
        .await
        .unwrap();
    let run = storming.await.unwrap();
    assert_exit(&run, 0);
    let (_, storm) = sale.json("storm.json");
    if let Err(why) = followed(&samples, finished, &storm) {
        panic!("{why}\nsamples: {samples:#?}");
    }
    let last = samples.last().unwrap();
    assert_eq!(last["seat_maps"], 1, "zone A's seats drawn: {last}");
    assert!(
        last["status"]
            .as_str()
            .unwrap()
            .starts_with("finished: PASS"),
        "{last}"
    );
    let shot = std::fs::metadata(artifact("dashboard.png")).expect("the screenshot kept");
    assert!(
        shot.len() > 10_000,
        "a picture of the page: {} bytes",
        shot.len()
    );
}

/// The page, served with a stream that tells one tick and then nothing: the
/// judgement that passes the real dashboard fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_whose_stream_stops_fails_the_same_judgement() {
    const PAGE: &str = include_str!("../../src/commands/storm/dashboard/page.html");
    let tick = json!({"t": 0.5, "sent": 40, "answered": 35, "in_flight": 5, "behind": 0,
        "outcomes": {"accepted": 35}, "rates": {"accepted": 70.0}, "p50_ms": 1.0, "p99_ms": 2.0});
    let events = move || {
        let first = Bytes::from(format!("event: tick\ndata: {tick}\n\n"));
        let then_nothing = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
        let stream =
            futures_util::StreamExt::chain(futures_util::stream::iter([Ok(first)]), then_nothing);
        async move {
            (
                [("content-type", "text/event-stream")],
                Body::from_stream(stream),
            )
                .into_response()
        }
    };
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/events", get(events));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let screenshot = artifact("dashboard-stalled.png");
    let (samples, finished) = tokio::task::spawn_blocking(move || browse(&url, 4, &screenshot))
        .await
        .unwrap();
    assert!(!finished, "no final figures ever came");
    let storm = json!({"attempts": 35, "outcomes": {"accepted": 35},
        "schedule": {"behind_sends": 0}, "check": {"verdict": "PASS"}});
    let why = followed(&samples, finished, &storm).expect_err("a stalled page is caught");
    assert!(why.contains("did not advance"), "{why}");
    assert!(
        samples.iter().any(|s| s["answered"] == 35),
        "the one tick shown: {samples:?}"
    );
}
