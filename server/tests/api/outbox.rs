//! The outbox relay: every committed order is announced, once, in a message
//! published with its message id; nothing is lost while RabbitMQ is away.

use std::collections::HashSet;
use std::time::Duration;

use flashtix_model::Role;
use flashtix_server::saga::broker::{self, Topology};
use flashtix_server::saga::outbox::MESSAGES_HEADER;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::AMQPValue;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    count, distinct_buyers, eventually, spawn_app_with, storm, test_amqp_url, TestApp,
};

const WITH_RELAY: [Role; 3] = [Role::Api, Role::Sweeper, Role::Relay];

struct Published {
    message_id: String,
    /// The outbox rows it carries, by message id.
    carried: Vec<String>,
    persistent: bool,
    body: Value,
}

/// Polls until the outbox has nothing left to publish.
async fn until_outbox_drained(app: &TestApp, limit: Duration) {
    eventually(limit, || async {
        let waiting = flashtix_server::saga::outbox::depth(&app.pool)
            .await
            .unwrap();
        match waiting {
            0 => Ok(()),
            _ => Err(format!("{waiting} outbox rows unpublished")),
        }
    })
    .await
}

/// Takes every message now in the namespace's `order.created` queue.
async fn take_order_created(app: &TestApp) -> Vec<Published> {
    let connection = broker::connect(&test_amqp_url()).await.expect("RabbitMQ");
    let channel = connection.create_channel().await.unwrap();
    let queue = Topology::new(app.namespace.clone()).queue("order.created");
    let mut taken = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        let delivery = message.delivery;
        let header = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|headers| headers.inner().get(MESSAGES_HEADER).cloned());
        let Some(AMQPValue::FieldArray(ids)) = header else {
            panic!("a message without {MESSAGES_HEADER}");
        };
        let carried = ids
            .as_slice()
            .iter()
            .map(|id| match id {
                AMQPValue::LongString(id) => String::from_utf8(id.as_bytes().to_vec()).unwrap(),
                other => panic!("{MESSAGES_HEADER} holds {other:?}"),
            })
            .collect();
        taken.push(Published {
            carried,
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string(),
            persistent: *delivery.properties.delivery_mode() == Some(2),
            body: serde_json::from_slice(&delivery.data).unwrap(),
        });
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    app.drop_queues().await;
    taken
}

/// The orders the messages announce, each as often as announced.
fn announced(published: &[Published]) -> Vec<&str> {
    published
        .iter()
        .flat_map(|m| m.body["orders"].as_array().unwrap())
        .map(|entry| entry["order_id"].as_str().unwrap())
        .collect()
}

async fn outbox_message_ids(app: &TestApp) -> HashSet<String> {
    sqlx::query_scalar::<_, uuid::Uuid>("SELECT message_id FROM outbox")
        .fetch_all(&app.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|id| id.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_orders_are_published_once_with_their_message_ids() {
    let app = spawn_app_with(|settings| settings.roles = WITH_RELAY.to_vec()).await;
    let event = app.create_event(50, 4).await;
    let answers = app.storm(event, distinct_buyers(60)).await;
    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 50);

    until_outbox_drained(&app, Duration::from_secs(20)).await;
    let published = take_order_created(&app).await;

    let accepted: HashSet<&str> = answers
        .iter()
        .filter(|a| a.status == StatusCode::ACCEPTED)
        .map(|a| a.order_id())
        .collect();
    let orders = announced(&published);
    assert_eq!(orders.len(), 50, "each order announced once, no more");
    assert_eq!(orders.iter().copied().collect::<HashSet<&str>>(), accepted);
    // Each outbox row is carried by exactly one message, which goes under the
    // id of its first row.
    let carried: Vec<&String> = published.iter().flat_map(|m| &m.carried).collect();
    let distinct: HashSet<String> = carried.iter().map(|id| id.to_string()).collect();
    assert_eq!(carried.len(), distinct.len(), "a row carried twice");
    assert_eq!(distinct, outbox_message_ids(&app).await);
    assert!(published.iter().all(|m| m.carried[0] == m.message_id));
    assert!(published.iter().all(|m| m.persistent));
    let entries = published
        .iter()
        .flat_map(|m| m.body["orders"].as_array().unwrap());
    assert!(entries
        .into_iter()
        .all(|entry| entry["amount_cents"] == 2500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_wait_in_the_outbox_while_rabbitmq_is_unreachable() {
    let app = spawn_app_with(|settings| {
        settings.roles = WITH_RELAY.to_vec();
        // Nothing listens on port 1: the relay cannot connect.
        settings.connections.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    })
    .await;
    let event = app.create_event(40, 4).await;

    let answers = app.storm(event, distinct_buyers(40)).await;

    assert_eq!(
        count(&answers, StatusCode::ACCEPTED, ""),
        40,
        "orders are still taken"
    );
    let (waiting, orders): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT m.id), count(*)
         FROM outbox m, jsonb_array_elements(m.payload->'orders')
         WHERE m.published_at IS NULL",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(orders, 40, "every order waits in the outbox");
    assert_eq!(
        flashtix_server::saga::outbox::depth(&app.pool)
            .await
            .unwrap(),
        waiting
    );
    assert_eq!(app.metric("flashtix_outbox_depth").await, waiting as u64);

    // RabbitMQ is reachable again (for a relay that can reach it).
    let _relay = app
        .another_server(|settings| settings.roles = vec![Role::Relay])
        .await;
    until_outbox_drained(&app, Duration::from_secs(20)).await;
    assert_eq!(app.metric("flashtix_outbox_depth").await, 0);
    let published = take_order_created(&app).await;
    assert_eq!(announced(&published).len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_publish_each_message_once() {
    let app = spawn_app_with(|settings| settings.roles = WITH_RELAY.to_vec()).await;
    let second = app
        .another_server(|settings| settings.roles = WITH_RELAY.to_vec())
        .await;
    let third = app
        .another_server(|settings| settings.roles = WITH_RELAY.to_vec())
        .await;
    let event = app.create_event(300, 4).await;

    let answers = storm(&[&app, &second, &third], event, distinct_buyers(300)).await;
    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 300);
    until_outbox_drained(&app, Duration::from_secs(20)).await;

    let published = take_order_created(&app).await;
    let distinct: HashSet<&str> = published.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(distinct.len(), published.len(), "a message published twice");
    let orders = announced(&published);
    let distinct: HashSet<&str> = orders.iter().copied().collect();
    assert_eq!((orders.len(), distinct.len()), (300, 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reports_rabbitmq_for_a_relay() {
    let relay = spawn_app_with(|settings| settings.roles = vec![Role::Relay]).await;
    let ready = relay.get("/ready").await;
    assert_eq!(ready.status(), StatusCode::OK);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["rabbitmq"], "ok");

    let cut_off = relay
        .another_server(|settings| {
            settings.roles = vec![Role::Relay];
            settings.connections.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
        })
        .await;
    let not_ready = cut_off.get("/ready").await;
    assert_eq!(not_ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = not_ready.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_ready");
    assert_ne!(body["checks"]["rabbitmq"], "ok");
    assert_eq!(body["checks"]["postgres"], "ok");
    relay.drop_queues().await;
}
