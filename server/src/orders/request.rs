//! A buy request, checked: the body of `POST /orders` and its `Idempotency-Key`.

use std::collections::HashSet;

use serde::Deserialize;

use uuid::Uuid;

use crate::gate::Hold;
use flashtix_model::input::{has_control, not_null};
use flashtix_model::seating::Choice;

/// Who buys: the token's subject (`buyer`), which a `user_id` in the body
/// may only repeat; without tokens, the body's `user_id`.
fn buyer_of(buyer: Option<&str>, named: Option<String>) -> Result<String, RequestError> {
    let user_id = match (buyer, named) {
        (Some(buyer), None) => buyer.to_owned(),
        (Some(buyer), Some(named)) if named == buyer => named,
        (Some(_), Some(_)) => return Err(RequestError::AnotherBuyer),
        (None, Some(named)) => named,
        (None, None) => {
            return Err(RequestError::Invalid(
                "user_id is required (the sale runs without tokens)".into(),
            ))
        }
    };
    let chars = user_id.chars().count();
    if chars == 0 || chars > MAX_USER_ID_LEN || has_control(&user_id) {
        return Err(RequestError::Invalid(format!(
            "user_id must be 1 to {MAX_USER_ID_LEN} printable characters"
        )));
    }
    Ok(user_id)
}

/// A request that passed every check that needs no database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceOrder {
    pub event_id: i64,
    pub user_id: String,
    pub quantity: i32,
    pub idempotency_key: String,
    /// Seats by id, a count in a zone, or a count for the event.
    pub choice: Choice,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the Idempotency-Key header is required (1 to {MAX_KEY_LEN} characters)")]
    MissingIdempotencyKey,
    #[error(
        "user_id names another buyer than the token's subject: leave it out, or name the token's"
    )]
    AnotherBuyer,
}

pub const MAX_KEY_LEN: usize = 128;
/// A buyer's id: a token's subject, as long as a subject may be.
pub const MAX_USER_ID_LEN: usize = crate::identity::tokens::MAX_SUBJECT_CHARS;
/// The most seats one order may name.
pub const MAX_SEATS: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    event_id: i64,
    #[serde(default, deserialize_with = "not_null")]
    user_id: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    quantity: Option<i64>,
    #[serde(default, deserialize_with = "not_null")]
    seats: Option<Vec<String>>,
    #[serde(default, deserialize_with = "not_null")]
    zone: Option<String>,
}

impl PlaceOrder {
    /// `buyer`: the subject of the request's token, who buys; `None` when
    /// the sale runs without tokens, and the body's `user_id` says who.
    pub fn parse(
        idempotency_key: Option<&str>,
        body: &[u8],
        buyer: Option<&str>,
    ) -> Result<Self, RequestError> {
        let idempotency_key = match idempotency_key {
            None | Some("") => return Err(RequestError::MissingIdempotencyKey),
            Some(key) => key,
        };
        if idempotency_key.chars().count() > MAX_KEY_LEN || has_control(idempotency_key) {
            return Err(RequestError::Invalid(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} printable characters"
            )));
        }
        let body: Body = decode_json(body)?;
        let user_id = buyer_of(buyer, body.user_id)?;
        if body.event_id < 1 {
            return Err(RequestError::Invalid(
                "event_id must be a positive integer".into(),
            ));
        }
        let (quantity, choice) = match (body.seats, body.quantity, body.zone) {
            (Some(_), Some(_), _) => {
                return Err(RequestError::Invalid(
                    "give either seats or quantity, not both".into(),
                ))
            }
            (Some(_), None, Some(_)) => {
                return Err(RequestError::Invalid(
                    "seats name their zone already: leave zone out".into(),
                ))
            }
            (Some(seats), None, None) => {
                let seats = check_seats(seats)?;
                (seats.len() as i32, Choice::Seats(seats))
            }
            (None, None, _) => {
                return Err(RequestError::Invalid(
                    "quantity is required (or seats, naming them)".into(),
                ))
            }
            (None, Some(quantity), zone) => {
                let quantity = i32::try_from(quantity)
                    .ok()
                    .filter(|q| *q >= 1)
                    .ok_or_else(|| {
                        RequestError::Invalid(format!(
                            "quantity must be a whole number of at least 1, got {quantity}"
                        ))
                    })?;
                let choice = match zone {
                    None => Choice::Count,
                    Some(zone) if zone.is_empty() || zone.len() > 16 => {
                        return Err(RequestError::Invalid(
                            "zone must be a zone's name (1 to 16 characters)".into(),
                        ))
                    }
                    Some(zone) => Choice::Zone(zone),
                };
                (quantity, choice)
            }
        };
        Ok(Self {
            event_id: body.event_id,
            user_id,
            quantity,
            idempotency_key: idempotency_key.to_owned(),
            choice,
        })
    }

    /// A reservation for this request, under a new order id.
    pub fn hold(&self) -> Hold {
        Hold {
            order_id: Uuid::now_v7(),
            event_id: self.event_id,
            user_id: self.user_id.clone(),
            idempotency_key: self.idempotency_key.clone(),
            quantity: self.quantity,
        }
    }

    /// What makes two requests with the same key "the same request": the user is
    /// already part of the key's scope, so the event and what was asked for
    /// (the same seats in any order are the same request).
    pub fn fingerprint(&self) -> String {
        match &self.choice {
            Choice::Count => format!("e{}q{}", self.event_id, self.quantity),
            Choice::Zone(zone) => format!("e{}z{zone}q{}", self.event_id, self.quantity),
            Choice::Seats(seats) => {
                let mut sorted = seats.clone();
                sorted.sort();
                format!("e{}s{}", self.event_id, sorted.join(","))
            }
        }
    }
}

/// 1 to [`MAX_SEATS`] seat ids, none twice.
fn check_seats(seats: Vec<String>) -> Result<Vec<String>, RequestError> {
    if seats.is_empty() || seats.len() > MAX_SEATS {
        return Err(RequestError::Invalid(format!(
            "seats must name 1 to {MAX_SEATS} seats"
        )));
    }
    let mut seen = HashSet::new();
    for seat in &seats {
        if seat.is_empty() || seat.len() > 40 || has_control(seat) {
            return Err(RequestError::Invalid(format!(
                "{seat:?} is not a seat id (ZONE-ROW-SEAT, like A-3-14)"
            )));
        }
        if !seen.insert(seat.as_str()) {
            return Err(RequestError::Invalid(format!("seat {seat} is named twice")));
        }
    }
    Ok(seats)
}

/// Decodes a JSON body, telling bad JSON (400) from JSON of the wrong shape (422).
pub fn decode_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RequestError> {
    serde_json::from_slice(body).map_err(|error| {
        if error.is_data() {
            RequestError::Invalid(format!("invalid request: {error}"))
        } else {
            RequestError::MalformedJson(error.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<PlaceOrder, RequestError> {
        PlaceOrder::parse(Some("k1"), body.as_bytes(), None)
    }

    #[test]
    fn accepts_a_plain_order() {
        let order = parse(r#"{"event_id": 3, "user_id": "u1", "quantity": 2}"#).unwrap();
        assert_eq!(order.quantity, 2);
        assert_eq!(order.fingerprint(), "e3q2");
    }

    #[test]
    fn reads_seats_and_zones() {
        let order =
            parse(r#"{"event_id": 3, "user_id": "u1", "seats": ["A-1-2", "A-1-1"]}"#).unwrap();
        assert_eq!(order.quantity, 2);
        assert_eq!(
            order.choice,
            Choice::Seats(vec!["A-1-2".into(), "A-1-1".into()])
        );
        let same =
            parse(r#"{"event_id": 3, "user_id": "u1", "seats": ["A-1-1", "A-1-2"]}"#).unwrap();
        assert_eq!(
            order.fingerprint(),
            same.fingerprint(),
            "seat order does not matter"
        );
        let zone =
            parse(r#"{"event_id": 3, "user_id": "u1", "zone": "B", "quantity": 2}"#).unwrap();
        assert_eq!(zone.choice, Choice::Zone("B".into()));
        assert_ne!(
            zone.fingerprint(),
            parse(r#"{"event_id": 3, "user_id": "u1", "quantity": 2}"#)
                .unwrap()
                .fingerprint()
        );
    }

    #[test]
    fn refuses_bad_seat_requests() {
        for (body, says) in [
            (
                r#"{"event_id": 3, "user_id": "u1", "seats": ["A-1-1"], "quantity": 1}"#,
                "not both",
            ),
            (
                r#"{"event_id": 3, "user_id": "u1", "seats": ["A-1-1", "A-1-1"]}"#,
                "named twice",
            ),
            (
                r#"{"event_id": 3, "user_id": "u1", "seats": []}"#,
                "1 to 64",
            ),
            (
                r#"{"event_id": 3, "user_id": "u1", "seats": ["A-1-1"], "zone": "A"}"#,
                "leave zone out",
            ),
            (
                r#"{"event_id": 3, "user_id": "u1", "zone": "A"}"#,
                "quantity is required",
            ),
            (
                r#"{"event_id": 3, "user_id": "u1", "zone": "", "quantity": 1}"#,
                "zone must be",
            ),
        ] {
            match parse(body) {
                Err(RequestError::Invalid(message)) => {
                    assert!(message.contains(says), "{body}: {message}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_bad_quantities() {
        for quantity in ["0", "-1", "1.5", "\"2\"", "1000000000000", "null"] {
            let body = format!(r#"{{"event_id": 3, "user_id": "u1", "quantity": {quantity}}}"#);
            assert!(
                matches!(parse(&body), Err(RequestError::Invalid(_))),
                "quantity {quantity} should be refused"
            );
        }
    }

    #[test]
    fn tells_malformed_from_invalid() {
        assert!(matches!(
            parse("{\"event_id\": "),
            Err(RequestError::MalformedJson(_))
        ));
        assert!(matches!(
            parse("not json"),
            Err(RequestError::MalformedJson(_))
        ));
        assert!(matches!(
            parse(r#"{"event_id": 3, "user_id": "u1", "quantity": 1, "price_cents": 0}"#),
            Err(RequestError::Invalid(_))
        ));
    }

    #[test]
    fn checks_the_key_and_user() {
        let body = br#"{"event_id": 3, "user_id": "u1", "quantity": 1}"#;
        assert_eq!(
            PlaceOrder::parse(None, body, None),
            Err(RequestError::MissingIdempotencyKey)
        );
        assert_eq!(
            PlaceOrder::parse(Some(""), body, None),
            Err(RequestError::MissingIdempotencyKey)
        );
        assert!(PlaceOrder::parse(Some(&"k".repeat(129)), body, None).is_err());
        assert!(PlaceOrder::parse(Some(&"k".repeat(128)), body, None).is_ok());
        let long_user = format!(
            r#"{{"event_id": 3, "user_id": "{}", "quantity": 1}}"#,
            "u".repeat(65)
        );
        assert!(PlaceOrder::parse(Some("k"), long_user.as_bytes(), None).is_err());
    }

    #[test]
    fn with_a_token_the_buyer_is_its_subject_and_a_body_may_not_name_another() {
        let bare = br#"{"event_id": 3, "quantity": 1}"#;
        let order = PlaceOrder::parse(Some("k"), bare, Some("alice")).unwrap();
        assert_eq!(order.user_id, "alice");
        let same = br#"{"event_id": 3, "user_id": "alice", "quantity": 1}"#;
        assert_eq!(
            PlaceOrder::parse(Some("k"), same, Some("alice"))
                .unwrap()
                .user_id,
            "alice"
        );
        let other = br#"{"event_id": 3, "user_id": "bob", "quantity": 1}"#;
        assert_eq!(
            PlaceOrder::parse(Some("k"), other, Some("alice")),
            Err(RequestError::AnotherBuyer)
        );
        assert!(matches!(
            PlaceOrder::parse(Some("k"), bare, None),
            Err(RequestError::Invalid(_))
        ));
    }
}
