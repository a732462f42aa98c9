//! Who may do what: each attack is sent to a real server and must be
//! refused, saying why, and change nothing.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use flashtix_server::identity::keys::{generate, key_set, PublicKeys, SigningKey};
use flashtix_server::identity::limits::Rate;
use flashtix_server::identity::Verifier;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{buyer_token, organizer_token, spawn_app, spawn_app_with, TestApp};

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Claims that verify, for `subject`; a test changes one.
fn claims(subject: &str) -> Value {
    json!({"sub": subject, "aud": "flashtix", "iss": "flashtix", "iat": now(), "nbf": now(), "exp": now() + 600})
}

/// A sale verifying EdDSA tokens of one key pair; the pair's signing key
/// and its public key set.
async fn sale_with_keys() -> (TestApp, SigningKey, Value) {
    let (pem, public) = generate().unwrap();
    let set = key_set(vec![public]);
    let keys = PublicKeys::parse(&set.to_string(), Algorithm::EdDSA).unwrap();
    let verifier = Arc::new(Verifier::with_keys(
        keys,
        Algorithm::EdDSA,
        "flashtix",
        "flashtix",
    ));
    let app = spawn_app_with(|settings| settings.identity.tokens = Some(verifier)).await;
    (app, SigningKey::from_pem(&pem).unwrap(), set)
}

/// Signs `claims` with the pair's key under its kid.
fn signed(key: &SigningKey, claims: &Value) -> String {
    key.sign(claims)
}

/// `POST /orders` of one ticket as `user`, with `token` (none: no header).
async fn buy(
    app: &TestApp,
    event: i64,
    user: &str,
    token: Option<&str>,
) -> (StatusCode, Value, Option<String>) {
    let mut request = app
        .client
        .post(format!("{}/orders", app.address))
        .header("Idempotency-Key", format!("k-{user}"))
        .json(&json!({"event_id": event, "user_id": user, "quantity": 1}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("POST /orders");
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|value| value.to_str().unwrap().to_owned());
    (status, response.json().await.expect("JSON"), challenge)
}

/// Sends `token` to buy as `alice` and asserts a 401 whose message has
/// `why`, a challenge, and no order made.
async fn refused(app: &TestApp, event: i64, token: &str, why: &str) {
    let (status, body, challenge) = buy(app, event, "alice", Some(token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{why}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(why), "{message:?} should say {why:?}");
    let challenge = challenge.expect("WWW-Authenticate");
    assert!(
        challenge.starts_with(r#"Bearer realm="flashtix", error="invalid_token""#),
        "{challenge}"
    );
    assert_eq!(app.order_count().await, 0, "{why}: nothing changes");
}

fn encode_part(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_stale_tokens_are_refused_and_change_nothing() {
    let (app, key, set) = sale_with_keys().await;
    let mut organizer = claims("box-office");
    organizer["role"] = json!("organizer");
    let event = app
        .create_event_as(
            &signed(&key, &organizer),
            json!({"name": "Keys", "total_tickets": 10, "price_cents": 100}),
        )
        .await;
    let kid = key.kid().unwrap().to_owned();

    // The real thing verifies: the attacks below fail for their own reason.
    let good = signed(&key, &claims("alice"));
    let (status, body, _) = buy(&app, event, "alice", Some(&good)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    sqlx::query("DELETE FROM outbox")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM orders")
        .execute(&app.pool)
        .await
        .unwrap();
    let other_key = |claims: &Value| {
        // A fresh key: its kid is unknown here.
        let (pem, _) = generate().unwrap();
        SigningKey::from_pem(&pem).unwrap().sign(claims)
    };

    // alg none: no signature at all.
    let none = format!(
        "{}.{}.",
        encode_part(&json!({"alg": "none", "typ": "JWT"})),
        encode_part(&claims("alice"))
    );
    refused(&app, event, &none, "malformed").await;
    // HS256 "signed" with the public key as its secret: an algorithm switch.
    let public_x = set["keys"][0]["x"].as_str().unwrap();
    for secret in [public_x.as_bytes().to_vec(), set.to_string().into_bytes()] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        let switched = jsonwebtoken::encode(
            &header,
            &claims("alice"),
            &EncodingKey::from_secret(&secret),
        )
        .unwrap();
        refused(&app, event, &switched, "accepts EdDSA only").await;
    }
    let mut expired = claims("alice");
    expired["exp"] = json!(now() - 3600);
    refused(&app, event, &signed(&key, &expired), "expired").await;
    let mut early = claims("alice");
    early["nbf"] = json!(now() + 3600);
    refused(&app, event, &signed(&key, &early), "not valid yet").await;
    let mut no_exp = claims("alice");
    no_exp.as_object_mut().unwrap().remove("exp");
    refused(&app, event, &signed(&key, &no_exp), "exp").await;
    let mut elsewhere = claims("alice");
    elsewhere["aud"] = json!("another-sale");
    refused(&app, event, &signed(&key, &elsewhere), "audience").await;
    let mut foreign = claims("alice");
    foreign["iss"] = json!("someone-else");
    refused(&app, event, &signed(&key, &foreign), "issuer").await;
    refused(&app, event, &other_key(&claims("alice")), "kid").await;
    // A payload swapped under a valid signature: bob's token made alice's.
    let bobs = signed(&key, &claims("bob"));
    let parts: Vec<&str> = bobs.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        encode_part(&claims("alice")),
        parts[2]
    );
    refused(&app, event, &tampered, "signature").await;
    // An oversized header, and an oversized token.
    let huge_header = format!(
        "{}.{}.{}",
        encode_part(&json!({"alg": "EdDSA", "kid": "k".repeat(600)})),
        parts[1],
        parts[2]
    );
    refused(&app, event, &huge_header, "header is longer than 512").await;
    let mut bloated = claims("alice");
    bloated["padding"] = json!("p".repeat(5000));
    refused(&app, event, &signed(&key, &bloated), "longer than 4096").await;
    refused(&app, event, "not-a-token", "malformed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_is_a_401_with_a_bare_challenge() {
    let app = spawn_app().await;
    let event = app.create_event(10, 4).await;
    let (status, body, challenge) = buy(&app, event, "alice", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="flashtix""#));
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Bearer"));
    let response = app
        .client
        .post(format!("{}/orders", app.address))
        .header("authorization", "Basic YWxpY2U6cHc=")
        .header("Idempotency-Key", "k")
        .json(&json!({"event_id": event, "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.order_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_buys_and_reads_as_themself_alone() {
    let app = spawn_app().await;
    let event = app.create_event(10, 4).await;
    let (alice, bob) = (buyer_token("alice"), buyer_token("bob"));

    // Alice names Bob in the body: refused, nothing made.
    let (status, body, _) = buy(&app, event, "bob", Some(&alice)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(app.order_count().await, 0);

    // With no user_id the buyer is the token's subject.
    let response = app
        .client
        .post(format!("{}/orders", app.address))
        .bearer_auth(&alice)
        .header("Idempotency-Key", "mine")
        .json(&json!({"event_id": event, "quantity": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let receipt: Value = response.json().await.unwrap();
    assert_eq!(receipt["user_id"], "alice");
    let path = format!("/orders/{}", receipt["order_id"].as_str().unwrap());

    // Bob may not read it, and cannot tell it exists: his answer is the
    // one for an order that does not exist, but for the id it names.
    let as_bob = app.get_as(&path, &bob).await;
    assert_eq!(as_bob.status(), StatusCode::NOT_FOUND);
    let as_bob = as_bob.text().await.unwrap();
    let nobodys = "01a1fe0f-6ed8-76e8-b307-76cb70942f7f";
    let missing = app.get_as(&format!("/orders/{nobodys}"), &bob).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let missing = missing.text().await.unwrap();
    let order_id = receipt["order_id"].as_str().unwrap();
    assert_eq!(
        as_bob.replace(order_id, "ID"),
        missing.replace(nobodys, "ID")
    );
    let as_alice = app.get_as(&path, &alice).await;
    assert_eq!(as_alice.status(), StatusCode::OK);
    assert_eq!(app.get(&path).await.status(), StatusCode::UNAUTHORIZED);

    // Bob's key "mine" is his own: the same key makes him an order of his.
    let (status, body, _) = buy(&app, event, "bob", Some(&bob)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let replay = app
        .client
        .post(format!("{}/orders", app.address))
        .bearer_auth(&bob)
        .header("Idempotency-Key", "mine")
        .json(&json!({"event_id": event, "quantity": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::ACCEPTED);
    assert!(
        replay.headers().get("idempotent-replayed").is_none(),
        "not alice's receipt"
    );
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["user_id"], "bob");

    // Each lists their own.
    let mine: Value = app.get_as("/me/orders", &alice).await.json().await.unwrap();
    let orders = mine["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1, "{mine}");
    assert!(orders.iter().all(|order| order["user_id"] == "alice"));
    let his: Value = app.get_as("/me/orders", &bob).await.json().await.unwrap();
    assert_eq!(his["orders"].as_array().unwrap().len(), 2, "{his}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organizers_create_events_and_see_their_orders_and_buyers_may_not() {
    let app = spawn_app().await;
    let url = format!("{}/events", app.address);
    let new_event = json!({"name": "Matinee", "total_tickets": 10, "price_cents": 700});
    let as_buyer = app
        .client
        .post(&url)
        .bearer_auth(buyer_token("mallory"))
        .json(&new_event)
        .send()
        .await
        .unwrap();
    assert_eq!(as_buyer.status(), StatusCode::FORBIDDEN);
    let challenge = as_buyer.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(events, 0, "a buyer made no event");

    let event = app.create_event_from(new_event).await;
    for n in 0..5 {
        let answer = app.order(event, &format!("fan-{n}"), "k", 1 + n % 2).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
    }
    let organizer = organizer_token();
    let page: Value = app
        .get_as(&format!("/events/{event}/orders?limit=3"), &organizer)
        .await
        .json()
        .await
        .unwrap();
    let first = page["orders"].as_array().unwrap();
    assert_eq!(first.len(), 3);
    let next = page["next"].as_str().expect("a next page");
    let rest: Value = app
        .get_as(
            &format!("/events/{event}/orders?after={next}&limit=3"),
            &organizer,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["orders"].as_array().unwrap().len(), 2);
    assert_eq!(rest["next"], Value::Null);
    let csv = app
        .get_as(&format!("/events/{event}/orders?format=csv"), &organizer)
        .await;
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().await.unwrap();
    assert_eq!(csv.lines().count(), 6, "a header and five orders:\n{csv}");
    assert!(
        csv.lines()
            .any(|line| line.contains(",fan-3,PENDING,2,1400,")),
        "{csv}"
    );

    let summary: Value = app
        .get_as(&format!("/events/{event}/summary"), &organizer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(summary["held_tickets"], 7, "{summary}");
    assert_eq!(summary["available_tickets"], 3);
    assert_eq!(summary["orders_pending"], 5);

    // Another organizer, and a buyer, are told nothing.
    let rival = flashtix_testkit::token("rival", flashtix_server::identity::Access::Organizer);
    let response = app.get_as(&format!("/events/{event}/orders"), &rival).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = app
        .get_as(&format!("/events/{event}/summary"), &buyer_token("fan-1"))
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_asking_too_fast_is_told_to_wait_and_others_are_not() {
    let app = spawn_app_with(|settings| {
        settings.identity.buyer_rate = Some(Rate {
            per_second: 1.try_into().unwrap(),
            burst: 3.try_into().unwrap(),
        })
    })
    .await;
    let event = app.create_event(100, 100).await;
    let token = buyer_token("eager");
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for n in 0..6 {
        let response = app
            .client
            .post(format!("{}/orders", app.address))
            .bearer_auth(&token)
            .header("Idempotency-Key", format!("k{n}"))
            .json(&json!({"event_id": event, "quantity": 1}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = response.headers().get("retry-after").cloned();
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited");
        }
    }
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    // Three at once, then one a second: six within a second get three or four.
    assert!((2..=3).contains(&refused), "{statuses:?}");
    assert_eq!(retry_after.unwrap(), "1");
    assert_eq!(app.order_count().await, 6 - refused as i64);
    let other = app.order(event, "patient", "k", 1).await;
    assert_eq!(other.status, StatusCode::ACCEPTED);
    assert!(
        app.metric("flashtix_buyer_requests_rate_limited_total")
            .await
            >= refused as u64
    );
}
