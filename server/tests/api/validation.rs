//! Bad input gets the right status and code, and changes nothing.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{buyer_token, organizer_token, spawn_app, TestApp};

async fn post_orders(
    app: &TestApp,
    key: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    // The buyer the body names, if it names one, so the body is what is judged.
    let subject = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|body| body["user_id"].as_str().map(str::to_owned))
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| "u1".to_owned());
    let mut request = app
        .client
        .post(format!("{}/orders", app.address))
        .bearer_auth(buyer_token(&subject))
        .header("content-type", content_type)
        .body(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /orders ({content_type}, {key:?}): {e}"));
    let status = response.status();
    (status, response.json().await.expect("errors are JSON"))
}

/// Sends `POST /orders` announcing `length` bytes, sends the first 128 KiB (past
/// the limit) and reads the answer. A client that streams all of it into a
/// server that already refused it gets a broken pipe instead of the answer.
async fn post_head_only(app: &TestApp, length: usize) -> (u16, Value) {
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {}\r\nIdempotency-Key: k\r\nContent-Length: {length}\r\n\r\n",
        buyer_token("u1")
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream
        .write_all(&vec![b' '; 128 * 1024])
        .await
        .expect("write the start of the body");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream.read(&mut buffer).await.expect("read answer");
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer);
        if read == 0 || text.contains("\r\n\r\n{") && text.trim_end().ends_with('}') {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text[9..12].parse().expect("status code");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or("");
    (status, serde_json::from_str(body).expect("errors are JSON"))
}

struct Case {
    what: &'static str,
    key: Option<String>,
    content_type: &'static str,
    body: Vec<u8>,
    status: StatusCode,
    code: &'static str,
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_orders_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let event = app.create_event(10, 4).await;
    let before = app.event(event).await;
    let redis_before = app.gate.observe(event).await.unwrap();
    let order = |quantity: &str| {
        format!(r#"{{"event_id": {event}, "user_id": "u1", "quantity": {quantity}}}"#)
    };
    let json_type = "application/json";

    let key = || Some("k".to_string());
    let mut cases: Vec<Case> = ["0", "-1", "1.5", "\"2\"", "1000000000000", "5"]
        .into_iter()
        .map(|quantity| Case {
            what: "bad quantity",
            key: key(),
            content_type: json_type,
            body: order(quantity).into_bytes(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_request",
        })
        .collect();
    let mut case = |what, key, content_type, body: Vec<u8>, status, code| {
        cases.push(Case {
            what,
            key,
            content_type,
            body,
            status,
            code,
        })
    };
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    case(
        "missing key",
        None,
        json_type,
        order("1").into_bytes(),
        unprocessable,
        "missing_idempotency_key",
    );
    case(
        "empty key",
        Some(String::new()),
        json_type,
        order("1").into_bytes(),
        unprocessable,
        "missing_idempotency_key",
    );
    case(
        "oversized key",
        Some("k".repeat(129)),
        json_type,
        order("1").into_bytes(),
        unprocessable,
        "invalid_request",
    );
    case(
        "unknown event",
        key(),
        json_type,
        br#"{"event_id": 999999, "user_id": "u1", "quantity": 1}"#.to_vec(),
        StatusCode::NOT_FOUND,
        "event_not_found",
    );
    case(
        "malformed JSON",
        key(),
        json_type,
        b"{\"event_id\": ".to_vec(),
        StatusCode::BAD_REQUEST,
        "malformed_json",
    );
    case(
        "client-set price",
        key(),
        json_type,
        format!(r#"{{"event_id": {event}, "user_id": "u1", "quantity": 1, "price_cents": 1}}"#)
            .into_bytes(),
        unprocessable,
        "invalid_request",
    );
    case(
        "a user_id that is not the token's subject",
        key(),
        json_type,
        format!(r#"{{"event_id": {event}, "user_id": "", "quantity": 1}}"#).into_bytes(),
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    case(
        "a null zone (the API has no nulls: leave a field out)",
        key(),
        json_type,
        format!(r#"{{"event_id": {event}, "user_id": "u1", "quantity": 1, "zone": null}}"#)
            .into_bytes(),
        unprocessable,
        "invalid_request",
    );
    case(
        "a null quantity beside seats",
        key(),
        json_type,
        format!(
            r#"{{"event_id": {event}, "user_id": "u1", "seats": ["A-1-1"], "quantity": null}}"#
        )
        .into_bytes(),
        unprocessable,
        "invalid_request",
    );
    case(
        "wrong content type",
        key(),
        "text/plain",
        order("1").into_bytes(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    for Case {
        what,
        key,
        content_type,
        body,
        status,
        code: expected,
    } in cases
    {
        let (got_status, got_body) = post_orders(&app, key.as_deref(), content_type, body).await;
        assert_eq!(
            (got_status, code(&got_body)),
            (status, expected),
            "{what}: {got_body}"
        );
        assert!(
            got_body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: a message a person can read"
        );
    }

    // Several MB: the server answers from the headers, before the body is sent.
    let (status, body) = post_head_only(&app, 5 * 1024 * 1024).await;
    assert_eq!((status, code(&body)), (413, "payload_too_large"), "{body}");

    assert_eq!(app.event(event).await, before);
    assert_eq!(app.order_count().await, 0);
    assert_eq!(app.gate.observe(event).await.unwrap(), redis_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_need_the_token_and_valid_events() {
    let app = spawn_app().await;
    let url = format!("{}/events", app.address);
    let good = json!({"name": "Show", "total_tickets": 5, "price_cents": 100});

    let anonymous = app.client.post(&url).json(&good).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong = app
        .client
        .post(&url)
        .bearer_auth("nope")
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(code(&wrong.json().await.unwrap()), "unauthorized");

    for bad in [
        json!({"name": "Show", "total_tickets": 0, "price_cents": 100}),
        json!({"name": "Show", "total_tickets": 5, "price_cents": -1}),
        json!({"name": "Show", "total_tickets": 5, "price_cents": 100, "max_per_user": 0}),
        json!({"name": "", "total_tickets": 5, "price_cents": 100}),
        json!({"name": "Show", "total_tickets": 5, "price_cents": 100, "hold_seconds": null}),
        json!({"name": "Show", "seating": null}),
        json!({"name": "Sh\u{0}ow", "total_tickets": 5, "price_cents": 100}),
    ] {
        let response = app
            .client
            .post(&url)
            .bearer_auth(organizer_token())
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(code(&response.json().await.unwrap()), "invalid_request");
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(events, 0);

    let created = app
        .client
        .post(&url)
        .bearer_auth(organizer_token())
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let body: Value = created.json().await.unwrap();
    assert_eq!(
        (body["max_per_user"].as_i64(), body["hold_seconds"].as_i64()),
        (Some(4), Some(300))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_things_are_json_404s() {
    let app = spawn_app().await;
    for path in [
        "/events/abc",
        "/events/424242",
        "/orders/not-a-uuid",
        "/orders/01a1fe0f-6ed8-76e8-b307-76cb70942f7f",
        "/nowhere",
    ] {
        let response = app.get_as(path, &buyer_token("u1")).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(code(&response.json().await.unwrap()), "not_found", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_answer() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1).await;
    app.order(event, "u", "k", 1).await;
    app.order(event, "v", "k", 1).await;

    let health = app.get_json("/health").await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["roles"], json!(["api", "sweeper"]));
    let ready = app.get_json("/ready").await;
    assert_eq!(ready["checks"], json!({"postgres": "ok", "redis": "ok"}));
    assert_eq!(
        app.metric("flashtix_orders_total{outcome=\"accepted\"}")
            .await,
        1
    );
    assert_eq!(
        app.metric("flashtix_orders_total{outcome=\"sold_out\"}")
            .await,
        1
    );
    // No payment worker here: the one accepted order waits.
    assert_eq!(app.metric("flashtix_orders_pending").await, 1);
}
