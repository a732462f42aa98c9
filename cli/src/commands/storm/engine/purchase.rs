//! One send: a purchase (with its duplicate, retries, fallback and revisit)
//! or one raw request, timed and classified.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use flashtix_model::history::{Attempt, Outcome};
use flashtix_model::seating::zone_of;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, StatusCode};
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

use super::super::record::{Measured, Sold};
use super::super::workload::Purchase;
use super::classify::{classify_failure, classify_status};
use super::http::{Endpoint, Failed, Transport};
use super::RawRequest;

/// One attempt's result, for the recorder and the history.
pub(super) struct Done {
    pub(super) measured: Measured,
    pub(super) attempt: Option<Attempt>,
}

/// What a lane's sends share: the way to the target, where orders go, and
/// the attempts' numbering.
pub(super) struct Sender {
    pub(super) transport: Transport,
    /// `POST /orders` (buying), or the raw URL.
    pub(super) endpoint: Endpoint,
    pub(super) attempts: Arc<AtomicU64>,
    pub(super) keep_history: bool,
}

/// What one job needs to send and time its attempts.
pub(super) struct Context {
    pub(super) sender: Arc<Sender>,
    pub(super) start: Instant,
    pub(super) due: Instant,
}

/// The first pause before a retry; it doubles up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE: Duration = Duration::from_millis(50);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);
/// How long after its answer a revisiting buyer asks again.
pub(super) const REVISIT_AFTER: Duration = Duration::from_secs(1);

impl Context {
    pub(super) async fn raw(&self, request: &RawRequest) -> Done {
        let sent = Instant::now();
        let answer = self
            .sender
            .transport
            .send(
                &request.method,
                &self.sender.endpoint,
                request.headers.clone(),
                request.body.clone(),
            )
            .await;
        let outcome = match answer {
            Ok(reply) => classify_status(reply.status, None),
            Err(Failed { failure, .. }) => classify_failure(failure),
        };
        Done {
            measured: self.measured(outcome, sent),
            attempt: None,
        }
    }

    /// Asks again for a purchase already answered (the caller waited
    /// [`REVISIT_AFTER`]); measured from now, as a send of its own.
    pub(super) async fn revisit(&self, purchase: &Purchase, retries: u32) -> Vec<Done> {
        let again = Context {
            sender: self.sender.clone(),
            start: self.start,
            due: Instant::now(),
        };
        again.buy(purchase, retries).await
    }

    /// Buys, trying again with the same key after an answer that says nothing.
    pub(super) async fn buy(&self, purchase: &Purchase, retries: u32) -> Vec<Done> {
        let mut done = Vec::new();
        let mut pause = RETRY_PAUSE;
        for try_number in 0..=retries {
            if try_number > 0 {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_PAUSE_MAX);
            }
            let sent = Instant::now();
            let sent_at = Utc::now();
            let Answer {
                outcome,
                status,
                order_id,
                retry_after,
                seats,
                zone,
                amount_cents,
            } = self.place(purchase).await;
            let attempt = self.sender.keep_history.then(|| Attempt {
                attempt: self.sender.attempts.fetch_add(1, Relaxed),
                event_id: purchase.event_id,
                user_id: purchase.user_id.clone(),
                idempotency_key: purchase.idempotency_key.clone(),
                quantity: purchase.quantity,
                sent_at,
                finished_at: Utc::now(),
                outcome,
                status,
                order_id,
                seats: seats.clone(),
                asked_seats: purchase.want.seats().map(<[String]>::to_vec),
                asked_zone: purchase.want.asked_zone().map(str::to_owned),
                amount_cents,
            });
            let mut measured = self.measured(outcome, sent);
            // Places on a seated event: its seats' zone, or its standing zone.
            let zone = zone.or_else(|| Some(zone_of(seats.as_ref()?.first()?)?.to_owned()));
            if let (Outcome::Accepted, Some(zone)) = (outcome, zone) {
                measured.sold = Some(Sold {
                    event_id: purchase.event_id,
                    zone,
                    tickets: purchase.quantity as u64,
                    seats: seats.unwrap_or_default(),
                });
            }
            done.push(Done { measured, attempt });
            if outcome.is_definite() {
                break;
            }
            // A polite client waits as long as the server asked.
            pause = pause.max(retry_after.unwrap_or_default());
        }
        done
    }

    async fn place(&self, purchase: &Purchase) -> Answer {
        let body = serde_json::to_vec(&OrderBody::of(purchase)).expect("the body serializes");
        let mut headers = HeaderMap::with_capacity(3);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(token) = &purchase.token {
            let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
                .expect("a token is base64url and dots");
            headers.insert(AUTHORIZATION, bearer);
        }
        let unanswered = |outcome, status: Option<StatusCode>| Answer {
            outcome,
            status: status.map(|status| status.as_u16()),
            order_id: None,
            retry_after: None,
            seats: None,
            zone: None,
            amount_cents: None,
        };
        let key = HeaderValue::from_str(&purchase.idempotency_key)
            .expect("the storm's keys are plain ASCII");
        headers.insert("idempotency-key", key);
        let answer = self
            .sender
            .transport
            .send(
                &Method::POST,
                &self.sender.endpoint,
                headers,
                Bytes::from(body),
            )
            .await;
        let reply = match answer {
            Ok(reply) => reply,
            Err(Failed { failure, status }) => {
                return unanswered(classify_failure(failure), status)
            }
        };
        let status = reply.status;
        let replayed = reply.headers.contains_key("idempotent-replayed");
        let retry_after = reply
            .headers
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok()?.parse().ok())
            .map(Duration::from_secs);
        // A body that is not the JSON of an answer says nothing but its status.
        let said: Said = serde_json::from_slice(&reply.body).unwrap_or_default();
        let mut error = said.error;
        let outcome = if status == StatusCode::ACCEPTED && replayed {
            Outcome::Replayed
        } else {
            classify_status(status, error["code"].as_str())
        };
        let order_id = said.order_id.as_str().and_then(|id| id.parse().ok());
        // A success that names no order says nothing about it.
        if matches!(outcome, Outcome::Accepted | Outcome::Replayed) && order_id.is_none() {
            return unanswered(Outcome::Unreadable, Some(status));
        }
        // The seats an order holds, or the seats a refusal said were gone.
        let seats = match outcome {
            Outcome::SeatTaken => error["seats"].take(),
            _ => said.seats,
        };
        Answer {
            outcome,
            status: Some(status.as_u16()),
            order_id,
            retry_after,
            seats: serde_json::from_value(seats).ok(),
            zone: said.zone.as_str().map(str::to_owned),
            amount_cents: said.amount_cents.as_i64(),
        }
    }

    fn measured(&self, outcome: Outcome, sent: Instant) -> Measured {
        Measured {
            outcome,
            intended: self.due - self.start,
            sent: sent - self.start,
            finished: self.start.elapsed().max(sent - self.start),
            sold: None,
        }
    }
}

/// What `POST /orders` is sent: the purchase's event and buyer, and what
/// it wants (a quantity, a quantity in a zone, or seats).
#[derive(serde::Serialize)]
struct OrderBody<'a> {
    event_id: i64,
    user_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    quantity: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zone: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seats: Option<&'a [String]>,
}

impl<'a> OrderBody<'a> {
    fn of(purchase: &'a Purchase) -> Self {
        let seats = purchase.want.seats();
        Self {
            event_id: purchase.event_id,
            user_id: &purchase.user_id,
            quantity: seats.is_none().then_some(purchase.quantity),
            zone: purchase.want.asked_zone(),
            seats,
        }
    }
}

/// The fields of an answer the storm reads (any other is skipped unread);
/// each is taken as whatever JSON it is, and judged when it is used.
#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct Said {
    order_id: Value,
    seats: Value,
    zone: Value,
    amount_cents: Value,
    error: Value,
}

/// What one buy request was told.
struct Answer {
    outcome: Outcome,
    status: Option<u16>,
    order_id: Option<Uuid>,
    /// The server's `Retry-After`, if it sent one.
    retry_after: Option<Duration>,
    /// The seats an accepted order holds, or a `seat_taken` said were gone.
    seats: Option<Vec<String>>,
    /// The general-admission zone of an accepted order on a seated event.
    zone: Option<String>,
    /// What an accepted order costs, as the answer said.
    amount_cents: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::storm::seats::Want;

    fn purchase(want: Want) -> Purchase {
        Purchase {
            number: 7,
            event_id: 3,
            user_id: "buyer-1-7".into(),
            token: None,
            idempotency_key: "storm-1-7".into(),
            quantity: 2,
            duplicated: false,
            revisits: false,
            want,
            falls_back: false,
        }
    }

    #[test]
    fn an_order_body_names_what_the_purchase_wants_and_nothing_else() {
        let body = |want| serde_json::to_value(OrderBody::of(&purchase(want))).unwrap();
        assert_eq!(
            body(Want::Count),
            serde_json::json!({"event_id": 3, "user_id": "buyer-1-7", "quantity": 2})
        );
        assert_eq!(
            body(Want::Zone("S".into())),
            serde_json::json!({"event_id": 3, "user_id": "buyer-1-7", "quantity": 2, "zone": "S"})
        );
        assert_eq!(
            body(Want::Seats(vec!["A-1-3".into(), "A-1-4".into()])),
            serde_json::json!({"event_id": 3, "user_id": "buyer-1-7", "seats": ["A-1-3", "A-1-4"]})
        );
    }

    #[test]
    fn an_answer_is_read_field_by_field_whatever_else_it_holds() {
        let said: Said = serde_json::from_slice(
            br#"{"order_id": "0190c3a4-0000-7000-8000-000000000001", "status": "pending",
                 "seats": ["A-1-3"], "amount_cents": 5000, "extra": {"deep": [1, 2]}}"#,
        )
        .unwrap();
        assert!(said.order_id.as_str().unwrap().parse::<Uuid>().is_ok());
        assert_eq!(said.seats, serde_json::json!(["A-1-3"]));
        assert_eq!(said.amount_cents.as_i64(), Some(5000));
        let refused: Said =
            serde_json::from_slice(br#"{"error": {"code": "sold_out", "message": "gone"}}"#)
                .unwrap();
        assert_eq!(refused.error["code"].as_str(), Some("sold_out"));
        assert!(refused.order_id.is_null());
    }
}
