//! `GET /openapi.json` describes the routes the server has: every documented
//! operation reaches a handler and answers a documented status, and every
//! other method on a documented path is refused with 405.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{organizer_token, spawn_app, TestApp};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// What the routes and the document disagree on.
async fn disagreements(app: &TestApp, document: &Value, event_id: i64) -> Vec<String> {
    let mut found = Vec::new();
    for (template, operations) in document["paths"].as_object().expect("paths") {
        // An event that exists; an order that does not.
        let path = match template.as_str() {
            "/orders/{id}" => "/orders/0190a9a1-0000-7000-8000-000000000000".to_owned(),
            _ => template.replace("{id}", &event_id.to_string()),
        };
        for method in METHODS {
            let request = app
                .client
                .request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    format!("{}{path}", app.address),
                )
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {}", organizer_token()))
                .header("idempotency-key", format!("openapi-{method}"))
                .body(json!({}).to_string());
            let response = request.send().await.expect("an answer");
            let status = response.status();
            // Only a 404's body tells a route from none; other bodies are not
            // read (a stream's never ends).
            let body: Value = if status == StatusCode::NOT_FOUND {
                response.json().await.unwrap_or(Value::Null)
            } else {
                Value::Null
            };
            let routed = !(status == StatusCode::NOT_FOUND
                && body["error"]["message"] == "no such route")
                && status != StatusCode::METHOD_NOT_ALLOWED;
            match operations.get(method) {
                Some(operation) => {
                    if !routed {
                        found.push(format!("{method} {template} is documented, not routed"));
                    } else if operation["responses"].get(status.as_str()).is_none() {
                        found.push(format!(
                            "{method} {template} answered {status}, undocumented"
                        ));
                    }
                }
                None if routed => found.push(format!(
                    "{method} {template} answers {status}, undocumented"
                )),
                None => {}
            }
        }
    }
    found
}

#[tokio::test]
async fn the_document_describes_the_routes_the_server_has() {
    let app = spawn_app().await;
    let event_id = app.create_event(10, 2).await;
    let response = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let document: Value = response.json().await.expect("the document is JSON");
    assert_eq!(document["openapi"], "3.0.3");

    let found = disagreements(&app, &document, event_id).await;
    assert!(found.is_empty(), "{found:#?}");

    // The comparison can fail: a route the server lacks, and one it has
    // that the document leaves out.
    let mut wrong = document.clone();
    wrong["paths"]["/refunds"] = json!({"post": {"responses": {"200": {}}}});
    wrong["paths"]["/orders/{id}"]
        .as_object_mut()
        .unwrap()
        .remove("get");
    wrong["paths"]["/events"]["post"]["responses"]
        .as_object_mut()
        .unwrap()
        .remove("422");
    let found = disagreements(&app, &wrong, event_id).await;
    assert!(
        found.contains(&"post /refunds is documented, not routed".to_owned()),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("get /orders/{id} answers")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("post /events answered 422")),
        "{found:#?}"
    );
}
