//! `flashtix storm` end to end: what it measures (coordinated omission),
//! what it records (duplicates, the history), and its exit codes, against the
//! real server and against small fake ones that misbehave on purpose.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{assert_all_held, assert_exit, assert_schema, stderr, stdout, Sale};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// Serves `app` on a free local port; returns its base URL.
async fn fake_server(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

/// `flashtix storm` with `args` (split at spaces), run off the runtime.
async fn storm(sale: &Sale, args: &str) -> std::process::Output {
    let mut all = vec!["storm"];
    all.extend(args.split_whitespace());
    sale.run_in_background(&all).await
}

fn history(path: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("the history file")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_from_the_intended_time_shows_a_stall_that_service_time_hides() {
    // The 500th request takes a second; the others answer at once.
    let served = Arc::new(AtomicU64::new(0));
    let app = Router::new().route(
        "/",
        get(move || {
            let served = served.clone();
            async move {
                if served.fetch_add(1, Ordering::Relaxed) == 500 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                "ok"
            }
        }),
    );
    let url = fake_server(app).await;
    let sale = Sale::new().await;
    let (json_file, _) = sale.json("storm.json");

    // One request at a time: while the stall lasts, the sends due meanwhile
    // wait in the client, as a closed-loop tool would silently skip them.
    let args = format!("--raw {url} --rate 1000 --duration 3s --max-inflight 1 --json {json_file}");
    let run = storm(&sale, &args).await;
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let (_, results) = sale.json("storm.json");
    let waited = &results["latency_from_intended_ms"]["accepted"];
    let served = &results["service_time_ms"]["accepted"];
    assert_eq!(results["outcomes"]["accepted"], 3000, "{results:#}");
    // About a third of the sends were due during the stall: they waited
    // hundreds of milliseconds.
    assert!(waited["p99"].as_f64().unwrap() > 500.0, "{waited}");
    assert!(waited["max"].as_f64().unwrap() >= 990.0, "{waited}");
    // The server took a second once; its p99 does not show it.
    assert!(served["p99"].as_f64().unwrap() < 100.0, "{served}");
    assert!(served["max"].as_f64().unwrap() >= 990.0, "{served}");
    assert!(results["late_sends"].as_u64().unwrap() > 500, "{results:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_to_stdout_is_the_results_alone_and_the_tables_go_to_stderr() {
    let url = fake_server(Router::new().route("/", get(|| async { "ok" }))).await;
    let sale = Sale::new().await;
    let run = storm(
        &sale,
        &format!(
            "--raw {url} --rate 200 --duration 0m0.5s --json - --csv {}/seconds.csv",
            sale.dir.display()
        ),
    )
    .await;
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let csv = std::fs::read_to_string(sale.dir.join("seconds.csv")).expect("the CSV");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[..3], ["second", "sent", "accepted"]);
    let accepted = header.iter().position(|h| *h == "accepted").unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|line| line.split(',').collect()).collect();
    assert!(rows.iter().all(|row| row.len() == header.len()), "{csv}");
    let total: u64 = rows
        .iter()
        .map(|row| row[accepted].parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 100, "the seconds add up to every answer: {csv}");
    let results: Value = serde_json::from_slice(&run.stdout).expect("stdout is one JSON document");
    assert_eq!(results["outcomes"]["accepted"], 100, "{results:#}");
    assert!(stderr(&run).contains("completed/s"), "{}", stderr(&run));
    // What the storm itself cost, said both ways.
    let cpu = results["generator_cpu_seconds"]
        .as_f64()
        .expect("the storm's CPU");
    assert!(cpu > 0.0, "{results:#}");
    assert!(
        stderr(&run).contains("storm's own CPU while sending"),
        "{}",
        stderr(&run)
    );
}

/// Runs `openssl` with `args` in `dir`; panics with its stderr if it fails.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let run = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(run.status.success(), "openssl {args:?}: {}", stderr(&run));
}

/// A CA (`ca.pem`) and a certificate it signed for 127.0.0.1 (`leaf.pem`,
/// `leaf.key`), in `dir`.
fn certificates(dir: &std::path::Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "1",
        "-subj",
        "/CN=flashtix test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    let mut request = vec!["req", "-subj", "/CN=127.0.0.1"];
    request.extend(ec);
    request.extend(["-keyout", "leaf.key", "-out", "leaf.csr"]);
    openssl(dir, &request);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.pem",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_target_is_sent_to_when_its_certificate_is_trusted_and_not_otherwise() {
    let sale = Sale::new().await;
    certificates(&sale.dir);
    // OpenSSL's own test server: a status page over TLS, one connection at
    // a time, on a port it picks and names once it listens.
    let mut server = std::process::Command::new("openssl")
        .current_dir(&sale.dir)
        .args(["s_server", "-www", "-cert", "leaf.pem", "-key", "leaf.key"])
        .args(["-accept", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server starts");
    let said = std::io::BufReader::new(server.stdout.take().unwrap());
    let server = KillOnDrop(server);
    // Its output stays open to the end of the test: a closed pipe would
    // kill it.
    let mut said = std::io::BufRead::lines(said).map_while(Result::ok);
    let port = said
        .by_ref()
        .find_map(|line| Some(line.strip_prefix("ACCEPT 127.0.0.1:")?.trim().to_owned()))
        .expect("s_server says where it listens");
    let url = format!("https://127.0.0.1:{port}/");
    let ca = sale.dir.join("ca.pem").display().to_string();
    let storm_with = |trust: &[&str]| {
        let mut args = vec![
            "storm",
            "--raw",
            &url,
            "--rate",
            "50",
            "--buyers",
            "10",
            "--max-inflight",
            "1",
            "--lanes",
            "1",
            "--timeout",
            "5s",
            "--json",
            "-",
        ];
        args.extend(trust);
        args.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    let sale = &sale;
    let outcomes = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = sale.run_in_background(&args).await;
        assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
        serde_json::from_slice::<Value>(&run.stdout).unwrap()["outcomes"].clone()
    };

    let trusted = outcomes(storm_with(&["--cacert", &ca])).await;
    assert_eq!(trusted["accepted"], 10, "{trusted}");
    let untrusted = outcomes(storm_with(&[])).await;
    assert_eq!(
        untrusted["accepted"], 0,
        "an unknown CA: no answer is taken"
    );
    let failed: u64 = ["error", "connect_error"]
        .iter()
        .map(|o| untrusted[o].as_u64().unwrap())
        .sum();
    assert_eq!(failed, 10, "{untrusted}");
    let insecure = outcomes(storm_with(&["--insecure"])).await;
    assert_eq!(insecure["accepted"], 10, "{insecure}");

    let text = sale.dir.join("leaf.ext").display().to_string();
    let not_pem = sale.run(&["storm", "--raw", &url, "--buyers", "1", "--cacert", &text]);
    assert_exit(&not_pem, 2);
    assert!(
        stderr(&not_pem).contains("not a PEM certificate"),
        "{}",
        stderr(&not_pem)
    );
    drop(server);
    drop(said);
}

/// A child process that is killed when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The closed model's concurrency is a cap however many lanes send: 3 over 2
/// lanes is 2 and 1, not 2 and 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_storm_keeps_exactly_its_concurrency_in_flight() {
    let (open, most) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let app = Router::new().route(
        "/",
        get({
            let (open, most) = (open.clone(), most.clone());
            move || async move {
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Long enough for every lane to fill its share meanwhile.
                tokio::time::sleep(Duration::from_millis(20)).await;
                open.fetch_sub(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let url = fake_server(app).await;
    let sale = Sale::new().await;
    let run = storm(
        &sale,
        &format!("--raw {url} --concurrency 3 --lanes 2 --buyers 60 --json -"),
    )
    .await;
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let results: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(results["outcomes"]["accepted"], 60, "{results:#}");
    assert_eq!(
        most.load(Ordering::SeqCst),
        3,
        "at most 3 at once, and 3 reached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_requests_carry_their_method_headers_and_body() {
    // 200 only for a POST with the headers and the body asked for (a
    // `Host` given is sent as given).
    let app = Router::new().route(
        "/",
        post(|headers: axum::http::HeaderMap, body: String| async move {
            let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
            let (token, host) = (header("x-token"), header("host"));
            if token == Some("a b") && host == Some("sale.example") && body == "{\"ping\": 1}" {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            }
        }),
    );
    let url = fake_server(app).await;
    let sale = Sale::new().await;
    let body_file = sale.dir.join("body.json");
    std::fs::write(&body_file, "{\"ping\": 1}").unwrap();
    let body = format!("@{}", body_file.display());
    let storm_of = |extra: &[&str]| {
        let mut args = vec![
            "storm", "--raw", &url, "--method", "POST", "--rate", "100", "--buyers", "20",
            "--json", "-",
        ];
        args.extend(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    let outcomes = |run: &std::process::Output| -> Value {
        assert_eq!(run.status.code(), Some(0), "{}", stderr(run));
        serde_json::from_slice::<Value>(&run.stdout).unwrap()["outcomes"].clone()
    };
    let sale = &sale;
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sale.run_in_background(&args).await
    };

    let asked = run(storm_of(&[
        "--header",
        "X-Token: a b",
        "--header",
        "Host: sale.example",
        "--body",
        &body,
    ]))
    .await;
    assert_eq!(outcomes(&asked)["accepted"], 20);
    let bare = run(storm_of(&["--body", &body])).await;
    assert_eq!(
        outcomes(&bare)["rejected"],
        20,
        "without the header: refused"
    );

    let bad = run(storm_of(&["--header", "no colon"])).await;
    assert_exit(&bad, 2);
    assert!(
        stderr(&bad).contains("is not 'Name: value'"),
        "{}",
        stderr(&bad)
    );
    let buying = sale.run(&["storm", "--event", "1", "--buyers", "1", "--body", "x"]);
    assert_exit(&buying, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_send_exactly_the_storms_purchases_and_are_checked_together() {
    let sale = Sale::new().await;
    let (events, _) = sale.reset(&["--tickets", "150", "--max-per-user", "4"]);
    let event = events[0]["id"].to_string();
    let server = sale.serve("all");
    let start_at = (chrono::Utc::now() + chrono::TimeDelta::seconds(3)).to_rfc3339();
    let shard = |index: usize| {
        format!(
            "--target {} --event {event} --rate 400 --buyers 300 --duplicates 0.2 --seed 5 \
             --shard {index}/2 --start-at {start_at} \
             --history {dir}/shard{index}.jsonl --json {dir}/shard{index}.json",
            server.url,
            dir = sale.dir.display()
        )
    };
    let (zero, one) = (shard(0), shard(1));
    let (first, second) = tokio::join!(storm(&sale, &zero), storm(&sale, &one));
    assert_exit(&first, 0);
    assert_exit(&second, 0);

    let path = |name: &str| sale.dir.join(name).display().to_string();
    let keys = |index: usize| -> std::collections::BTreeSet<u64> {
        history(&path(&format!("shard{index}.jsonl")))
            .iter()
            .map(|a| {
                let key = a["idempotency_key"].as_str().unwrap();
                key.strip_prefix("storm-5-").unwrap().parse().unwrap()
            })
            .collect()
    };
    let (even, odd) = (keys(0), keys(1));
    assert!(even.iter().all(|n| n % 2 == 0) && odd.iter().all(|n| n % 2 == 1));
    let union: Vec<u64> = even.union(&odd).copied().collect();
    assert_eq!(
        union,
        (0..300).collect::<Vec<u64>>(),
        "every purchase, once"
    );
    // On the whole storm's schedule from the common start: purchase n is
    // due n/400 s after it (not at its place among its shard's own).
    let start: chrono::DateTime<chrono::Utc> = start_at.parse().unwrap();
    let sent = |a: &Value| -> f64 {
        let at: chrono::DateTime<chrono::Utc> = a["sent_at"].as_str().unwrap().parse().unwrap();
        (at - start).num_microseconds().unwrap() as f64 / 1e6
    };
    let shard_one = history(&path("shard1.jsonl"));
    let last = shard_one
        .iter()
        .find(|a| a["idempotency_key"] == "storm-5-299")
        .expect("purchase 299, shard 1's");
    assert!(sent(last) >= 0.74, "sent {} s after the start", sent(last));
    assert!(
        shard_one.iter().all(|a| sent(a) >= -0.01),
        "none before the start"
    );
    assert!(
        stderr(&first).contains("no settle or check here"),
        "a shard does not check alone: {}",
        stderr(&first)
    );
    for index in 0..2 {
        let (_, results) = sale.json(&format!("shard{index}.json"));
        assert_schema("storm", &results);
        assert_eq!(results["started_at"], json!(start_at_utc(&start_at)));
        assert_eq!(results["shard"], json!({"index": index, "count": 2}));
    }

    // Merged, the two are one storm: every attempt of both, and the
    // percentiles of one histogram of them all.
    let merge = sale.run(&[
        "merge",
        &path("shard0.json"),
        &path("shard1.json"),
        "--json",
        &path("merged.json"),
        "--report",
        &path("merged.html"),
        "--hdr",
        &path("merged.hgrm"),
        "--history",
        &path("shard0.jsonl"),
        &path("shard1.jsonl"),
    ]);
    assert_exit(&merge, 0);
    let (_, merged) = sale.json("merged.json");
    // Fairness over every purchase of both shards: all 300 buyers.
    assert_eq!(merged["fairness"][0]["purchases"], 300, "{merged:#}");
    assert_schema("storm", &merged);
    // The schema is no formality: it refuses what the storm does not write.
    let broken = |change: &dyn Fn(&mut Value)| {
        let mut document = merged.clone();
        change(&mut document);
        crate::common::schema_errors("storm", &document)
    };
    for (what, errors) in [
        (
            "measures left out",
            broken(&|d| drop(d.as_object_mut().unwrap().remove("measures"))),
        ),
        (
            "an outcome nobody has",
            broken(&|d| d["outcomes"]["won_a_car"] = json!(1)),
        ),
        (
            "a rate as text",
            broken(&|d| d["rates"]["sent"] = json!("fast")),
        ),
        (
            "a histogram not in base64",
            broken(&|d| d["measures"]["lateness"] = json!("not base64!")),
        ),
        (
            "a field not described",
            broken(&|d| d["surprise"] = json!(true)),
        ),
    ] {
        assert!(!errors.is_empty(), "{what}: the schema let it through");
    }
    let both: Vec<Value> = [0, 1]
        .iter()
        .flat_map(|i| history(&path(&format!("shard{i}.jsonl"))))
        .collect();
    assert_eq!(merged["attempts"], both.len(), "{merged:#}");
    assert_eq!(merged["merged_from"], 2);
    let shard_doc = |i: usize| sale.json(&format!("shard{i}.json")).1;
    for outcome in merged["outcomes"].as_object().unwrap().keys() {
        let sum = shard_doc(0)["outcomes"][outcome].as_u64().unwrap()
            + shard_doc(1)["outcomes"][outcome].as_u64().unwrap();
        assert_eq!(merged["outcomes"][outcome], sum, "{outcome}");
        let mut served: Vec<f64> = both
            .iter()
            .filter(|a| a["outcome"] == outcome.as_str())
            .map(|a| {
                let at = |key: &str| -> chrono::DateTime<chrono::Utc> {
                    a[key].as_str().unwrap().parse().unwrap()
                };
                (at("finished_at") - at("sent_at"))
                    .num_microseconds()
                    .unwrap() as f64
                    / 1000.0
            })
            .collect();
        assert_eq!(served.len() as u64, sum);
        if served.is_empty() {
            continue;
        }
        served.sort_by(f64::total_cmp);
        for (name, percentile) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
            let rank = ((percentile * served.len() as f64).ceil() as usize).max(1);
            let from_history = served[rank - 1];
            let from_merge = merged["service_time_ms"][outcome][name].as_f64().unwrap();
            // HDR keeps 3 significant figures; the history's clock is read
            // apart from the storm's, and on a busy machine a task can be
            // set aside between the two reads (seen: 0.9 ms). Any order
            // statistic moves by at most that much.
            assert!(
                (from_merge - from_history).abs() <= from_history * 0.002 + 2.0,
                "{outcome} {name}: merged {from_merge} ms, history {from_history} ms"
            );
        }
    }
    let page = std::fs::read_to_string(path("merged.html")).unwrap();
    assert!(page.contains("2 merged"), "the report of the merge");
    let hgrm = std::fs::read_to_string(path("merged.hgrm")).unwrap();
    assert!(
        hgrm.contains(&format!("Total count    = {:>12}", both.len())),
        "{hgrm}"
    );
    let twice = sale.run(&["merge", &path("shard0.json"), &path("shard0.json")]);
    assert_exit(&twice, 2);
    assert!(stderr(&twice).contains("given twice"), "{}", stderr(&twice));
    let not_a_storm = sale.run(&["merge", &path("shard0.jsonl")]);
    assert_exit(&not_a_storm, 2);

    // The sale settles (payments in flight), then is proven against both.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let together = loop {
        let run = sale.run(&[
            "check",
            "--history",
            &path("shard0.jsonl"),
            &path("shard1.jsonl"),
        ]);
        if !stdout(&run).contains("UNKNOWN") || std::time::Instant::now() > deadline {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_all_held(&together);
    let one = sale.run(&["check", "--history", &path("shard0.jsonl")]);
    assert_exit(&one, 1);
    assert!(
        stdout(&one).contains("no_lost_order"),
        "half the history: orders nobody asked for: {}",
        stdout(&one)
    );
}

/// A time as the storm's JSON writes it.
fn start_at_utc(rfc3339: &str) -> String {
    let at: chrono::DateTime<chrono::Utc> = rfc3339.parse().unwrap();
    serde_json::to_value(at)
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_that_cannot_keep_its_schedule_says_so() {
    let url = fake_server(Router::new().route("/", get(|| async { "ok" }))).await;
    let sale = Sale::new().await;
    let (json_file, _) = sale.json("behind.json");
    // One lane asked for 200,000 sends a second: no machine here sends that.
    let run = storm(
        &sale,
        &format!("--raw {url} --rate 200000 --buyers 20000 --lanes 1 --json {json_file}"),
    )
    .await;
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let (_, results) = sale.json("behind.json");
    let schedule = &results["schedule"];
    assert_eq!(schedule["kept"], false, "{results:#}");
    assert!(
        schedule["behind_sends"].as_u64().unwrap() > 200,
        "{schedule}"
    );
    assert!(stdout(&run).contains("BEHIND SCHEDULE"), "{}", stdout(&run));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_come_back_as_replays_of_the_first_order_and_the_history_has_every_attempt() {
    let sale = Sale::new().await;
    let (events, _) = sale.reset(&["--tickets", "150", "--max-per-user", "4"]);
    let event = events[0]["id"].to_string();
    let server = sale.serve("all");
    let (json_file, _) = sale.json("storm.json");
    let history_file = sale.dir.join("history.jsonl").display().to_string();
    let report_file = sale.dir.join("storm.html").display().to_string();
    let hdr_file = sale.dir.join("storm.hgrm").display().to_string();

    let url = &server.url;
    let args = format!(
        "--target {url} --event {event} --rate 500 --buyers 300 --duplicates 0.3 \
         --quantity 1:80,2:20 --seed 7 --history {history_file} --json {json_file} \
         --report {report_file} --hdr {hdr_file}"
    );
    let run = storm(&sale, &args).await;
    assert_all_held(&run);

    let (_, results) = sale.json("storm.json");
    // Checked, with a history: every part of the document but the seats.
    assert_schema("storm", &results);
    for part in ["check", "fairness", "settle_seconds", "measures"] {
        assert!(results.get(part).is_some(), "{part} in {results:#}");
    }
    let attempts = history(&history_file);
    let summed: u64 = results["outcomes"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(summed, attempts.len() as u64);
    assert_eq!(results["attempts"], attempts.len() as u64);

    // 150 tickets for 300 buyers arriving 2 ms apart: sold out, and sold
    // (nearly) in the order the buyers came.
    let fairness = &results["fairness"][0];
    let winners = fairness["winners"].as_u64().unwrap();
    assert!(winners > 50 && winners < 300, "{fairness}");
    assert!(
        fairness["sold_out_seconds"].as_f64().unwrap() > 0.0,
        "{fairness}"
    );
    assert!(
        fairness["first_arrivals_won"].as_u64().unwrap() * 10 >= winners * 8,
        "{fairness}"
    );
    assert!(
        fairness["rank_correlation"].as_f64().unwrap() > 0.5,
        "first come, first served, not a lottery: {fairness}"
    );

    // The page and the distribution tell the same story as the JSON.
    let page = std::fs::read_to_string(&report_file).expect("the HTML report");
    assert_eq!(page.matches("<svg").count(), 3, "three charts");
    assert!(!page.contains("<script"), "no script: it opens offline");
    assert!(page.contains("<span class=\"PASS\">PASS</span>"));
    assert!(page.contains("Sell-out and fairness"), "the fairness table");
    let hgrm = std::fs::read_to_string(&hdr_file).expect("the .hgrm file");
    let last_row = hgrm
        .lines()
        .rfind(|line| line.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .unwrap();
    let total: u64 = last_row.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_eq!(total, attempts.len() as u64, "{hgrm}");
    let numbers: std::collections::HashSet<u64> = attempts
        .iter()
        .map(|a| a["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers.len(), attempts.len(), "every attempt once");

    // Per key: at most one new order; any replay names that order.
    let mut by_key: HashMap<&str, Vec<&Value>> = HashMap::new();
    for attempt in &attempts {
        by_key
            .entry(attempt["idempotency_key"].as_str().unwrap())
            .or_default()
            .push(attempt);
    }
    assert_eq!(by_key.len(), 300, "one key per purchase");
    let doubled = by_key.values().filter(|a| a.len() == 2).count();
    assert!(
        (50..130).contains(&doubled),
        "{doubled} of 300 purchases sent twice"
    );
    let mut replays = 0;
    for tries in by_key.values() {
        let accepted: Vec<_> = tries
            .iter()
            .filter(|a| a["outcome"] == "accepted")
            .collect();
        assert!(accepted.len() <= 1, "{tries:?}");
        for replay in tries.iter().filter(|a| a["outcome"] == "replayed") {
            replays += 1;
            assert_eq!(
                accepted.len(),
                1,
                "a replay of an accepted order: {tries:?}"
            );
            assert_eq!(replay["order_id"], accepted[0]["order_id"], "{tries:?}");
        }
    }
    assert!(replays > 0, "some double clicks came back as replays");
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&sale.pool().await)
        .await
        .unwrap();
    assert_eq!(
        orders as u64,
        results["outcomes"]["accepted"].as_u64().unwrap()
    );

    // The same storm again must now miss an impossible service level: exit 3.
    let args = format!(
        "--target {url} --event {event} --rate 200 --buyers 20 \
         --threshold p99<1us --threshold error_rate<1%"
    );
    let missed = storm(&sale, &args).await;
    assert_exit(&missed, 3);
    assert!(
        stdout(&missed).contains("threshold p99<1us: MISSED"),
        "{}",
        stdout(&missed)
    );
    assert!(
        stdout(&missed).contains("threshold error_rate<1%: met"),
        "{}",
        stdout(&missed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_accepts_orders_it_never_wrote_fails_the_storm() {
    let sale = Sale::new().await;
    let (events, _) = sale.reset(&["--tickets", "10"]);
    let event = events[0]["id"].to_string();
    // Says yes to everyone, writes nothing: 50 buyers for 10 tickets.
    let liar = Router::new()
        .route(
            "/orders",
            post(|| async {
                let order_id = uuid::Uuid::now_v7();
                (
                    StatusCode::ACCEPTED,
                    Json(json!({"order_id": order_id, "status": "PENDING"})),
                )
            }),
        )
        .route("/health", get(|| async { "ok" }));
    let url = fake_server(liar).await;
    let history_file = sale.dir.join("history.jsonl").display().to_string();

    let args = format!(
        "--target {url} --event {event} --rate 500 --buyers 50 --history {history_file} --settle 1s"
    );
    let run = storm(&sale, &args).await;
    assert_eq!(
        run.status.code(),
        Some(1),
        "{}{}",
        stdout(&run),
        stderr(&run)
    );
    let printed = stdout(&run);
    assert!(
        printed.contains("FAIL: an invariant was broken"),
        "{printed}"
    );
    assert!(printed.contains("no_lost_order"), "{printed}");
}

/// A `202` whose body names no order (cut short, or not JSON) says nothing
/// about the order: the storm records it as `unreadable`, an unknown
/// outcome it retries under the same key, never as an acceptance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_without_an_order_is_an_unknown_outcome() {
    let sale = Sale::new().await;
    let (events, _) = sale.reset(&["--tickets", "10"]);
    let event = events[0]["id"].to_string();
    let garbled = Router::new()
        .route(
            "/orders",
            post(|| async { (StatusCode::ACCEPTED, "{\"order_id\": \"not") }),
        )
        .route("/health", get(|| async { "ok" }));
    let url = fake_server(garbled).await;
    let history_file = sale.dir.join("history.jsonl").display().to_string();
    let (json_file, _) = sale.json("storm.json");
    let args = format!(
        "--target {url} --event {event} --rate 100 --buyers 5 --retries 1 \
         --history {history_file} --json {json_file} --no-check"
    );
    let run = storm(&sale, &args).await;
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let outcomes = &sale.json("storm.json").1["outcomes"];
    assert_eq!(
        outcomes["unreadable"], 10,
        "5 buyers, each tried twice: {outcomes}"
    );
    assert_eq!(outcomes["accepted"], 0, "{outcomes}");
    let attempts = history(&history_file);
    assert!(
        attempts.iter().all(|a| a["outcome"] == "unreadable"
            && a["status"] == 202
            && a.get("order_id").is_none()),
        "{attempts:?}"
    );
}

#[tokio::test]
async fn a_storm_with_no_end_or_bad_flags_exits_2() {
    let sale = Sale::new().await;
    for (flags, says) in [
        (vec!["--rate", "100"], "say when the storm ends"),
        (vec!["--spike", "0"], "--spike needs --buyers"),
        (
            vec!["--rate", "0", "--buyers", "5"],
            "--rate must be above 0",
        ),
        (
            vec!["--ramp", "1:2", "--buyers", "5"],
            "--ramp takes FROM:TO:DURATION",
        ),
        (
            vec!["--ramp", "100:200:soon", "--buyers", "5"],
            "\"soon\" is not a duration",
        ),
        (
            vec!["--buyers", "5", "--duplicates", "2"],
            "--duplicates is a share",
        ),
        (
            vec!["--buyers", "5", "--threshold", "p98<1ms"],
            "unknown measure",
        ),
        (vec!["--buyers", "5", "--quantity", "0"], "not a quantity"),
        (vec!["--buyers", "5", "--shard", "0/2"], "--start-at <TIME>"),
    ] {
        let mut args = vec!["storm", "--event", "1"];
        args.extend(flags);
        let run = sale.run(&args);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", stderr(&run));
        assert!(stderr(&run).contains(says), "{args:?}: {}", stderr(&run));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_seeds_its_sale_and_flags_on_the_command_line_win() {
    let sale = Sale::new().await;
    sale.reset(&["--tickets", "5"]);
    let server = sale.serve("all");
    let scenario = sale.dir.join("herd.toml");
    std::fs::write(
        &scenario,
        r#"
        description = "a small herd"
        [sale]
        tickets = 40
        max-per-user = 2
        [storm]
        spike = "0s"
        buyers = 1000
        quantity = "2"
        "#,
    )
    .unwrap();
    let (json_file, _) = sale.json("storm.json");

    let args = format!(
        "--target {} --scenario {} --reset --buyers 200 --json {json_file}",
        server.url,
        scenario.display()
    );
    let run = storm(&sale, &args).await;

    assert_exit(&run, 0);
    assert!(
        stderr(&run).contains("scenario: a small herd"),
        "{}",
        stderr(&run)
    );
    let (_, results) = sale.json("storm.json");
    assert_eq!(
        results["attempts"], 200,
        "--buyers 200 won over the file's 1000"
    );
    assert_eq!(
        results["outcomes"]["accepted"], 20,
        "40 tickets, 2 a purchase"
    );
    assert_eq!(results["outcomes"]["sold_out"], 180);
    let (tickets, max_per_user): (i32, i32) =
        sqlx::query_as("SELECT total_tickets, max_per_user FROM events")
            .fetch_one(&sale.pool().await)
            .await
            .expect("the one event the scenario seeded");
    assert_eq!((tickets, max_per_user), (40, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_scenario_exits_2_and_says_what_is_wrong() {
    let sale = Sale::new().await;
    let file = |name: &str, text: &str| {
        let path = sale.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let missing = sale.dir.join("missing.toml").display().to_string();
    for (path, says) in [
        (missing, "reading scenario"),
        (
            file("typo.toml", "[storm]\nbuyer = 5\n"),
            "unknown field `buyer`",
        ),
        (
            file("two.toml", "[storm]\nrate = 5.0\nspike = \"1s\"\n"),
            "more than one of rate, ramp, spike and concurrency",
        ),
        (
            file("bad.toml", "[storm]\nbuyers = 5\nspike = \"soon\"\n"),
            "\"soon\" is not a duration",
        ),
        (
            file("quantity.toml", "[storm]\nbuyers = 5\nquantity = \"0\"\n"),
            "not a quantity of 1 or more",
        ),
    ] {
        let run = sale.run(&["storm", "--event", "1", "--scenario", &path]);
        assert_eq!(run.status.code(), Some(2), "{path}: {}", stderr(&run));
        assert!(stderr(&run).contains(says), "{path}: {}", stderr(&run));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seated_storm_picks_seats_falls_back_to_the_best_left_and_proves_every_seat() {
    let sale = Sale::new().await;
    let (events, _) = sale.reset(&[
        "--seating",
        "A:5x10@9000,B:5x10@5000,GA:50@2000",
        "--max-per-user",
        "6",
    ]);
    let event = events[0]["id"].to_string();
    let server = sale.serve("all");
    let (json_file, _) = sale.json("storm.json");
    let history_file = sale.dir.join("history.jsonl").display().to_string();
    let report_file = sale.dir.join("storm.html").display().to_string();
    let url = &server.url;
    let args = format!(
        "--target {url} --event {event} --rate 400 --buyers 200 --quantity 1:40,2:40,4:20 \
         --seat-retry 0.5 --duplicates 0.1 --seed 3 --history {history_file} --json {json_file} \
         --report {report_file}"
    );
    let run = storm(&sale, &args).await;
    assert_all_held(&run);
    let printed = stdout(&run);
    assert!(printed.contains("one_owner_per_seat"), "{printed}");

    let attempts = history(&history_file);
    let outcome = |name: &str| attempts.iter().filter(|a| a["outcome"] == name).count();
    assert!(outcome("seat_taken") > 0, "buyers raced for the same seats");
    let picked = attempts
        .iter()
        .filter(|a| a["outcome"] == "accepted" && a["seats"].is_array())
        .count();
    assert!(picked > 0, "accepted answers name their seats");
    let fell_back = attempts
        .iter()
        .filter(|a| a["idempotency_key"].as_str().unwrap().ends_with("-best"))
        .count();
    assert!(
        fell_back > 0,
        "some who lost a race asked for the best left"
    );

    let (_, results) = sale.json("storm.json");
    assert_schema("storm", &results);
    let zones = results["seating"]
        .as_array()
        .expect("the zones after the storm");
    assert_eq!(zones.len(), 3);
    for zone in zones {
        let taken = zone["held"].as_u64().unwrap() + zone["sold"].as_u64().unwrap();
        assert_eq!(
            zone["tickets_in_storm"].as_u64().unwrap(),
            taken,
            "what the storm was sold is what the map shows taken: {zone}"
        );
        assert_eq!(
            zone["returning"], 0,
            "every order paid: no seat on its way back"
        );
        assert_eq!(
            zone["held"], 0,
            "the map is read once the sale settled: no seat still held: {zone}"
        );
        assert_eq!(
            taken + zone["available"].as_u64().unwrap(),
            zone["capacity"].as_u64().unwrap()
        );
        if zone["available"] == 0 {
            assert!(zone["sold_out_seconds"].as_f64().is_some(), "{zone}");
        }
        if zone["kind"] == "reserved" {
            let sold_at = zone["sold_at_seconds"].as_object().unwrap();
            assert_eq!(sold_at.len() as u64, taken, "each seat sold has its time");
        }
    }
    let page = std::fs::read_to_string(&report_file).expect("the HTML report");
    assert_eq!(
        page.matches("<svg").count(),
        3 + 2,
        "three charts, two seat maps"
    );
    assert_eq!(
        page.matches("<title>A-").count(),
        50,
        "every seat of zone A drawn"
    );
}
