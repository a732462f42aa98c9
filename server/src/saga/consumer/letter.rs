//! A delivery read for its handler: the message's entries, each decoded on
//! its own, so that one entry that can never be handled is dead-lettered alone
//! while the rest of its batch goes on.

use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Confirmation};
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use super::Handled;
use crate::saga::messages::Batch;
use crate::saga::outbox::MESSAGES_HEADER;

/// The header of a dead-lettered entry that says why it could not be handled.
pub const REASON_HEADER: &str = "x-flashtix-reason";

/// What one delivery held.
pub enum Letter<E> {
    /// No message id, or a body that is not a batch: dead-lettered whole.
    Unreadable(String),
    Readable {
        message_id: Uuid,
        /// The outbox rows whose entries it carries (the relay puts several
        /// together): each is recorded as processed.
        message_ids: Vec<Uuid>,
        /// Every entry as it came, for dead-lettering one alone.
        raw: Vec<Value>,
        /// Per entry, why it could not be decoded (`None`: it is in `entries`).
        unreadable: Vec<Option<String>>,
        /// The entries that decoded, in order, for the handler.
        entries: Vec<E>,
    },
}

impl<E: DeserializeOwned> Letter<E> {
    pub fn read(delivery: &Delivery, topic: &str) -> Self {
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .and_then(|id| id.as_str().parse().ok());
        let Some(message_id) = message_id else {
            return Self::Unreadable("no message id".into());
        };
        let message_ids = match carried(delivery) {
            Ok(ids) if ids.is_empty() => vec![message_id],
            Ok(ids) => ids,
            Err(reason) => return Self::Unreadable(reason),
        };
        // A body from before messages were batches is its own one entry.
        let raw = match serde_json::from_slice::<Value>(&delivery.data) {
            Ok(Value::Object(mut body)) => match body.remove("orders") {
                Some(Value::Array(entries)) => entries,
                Some(_) => return Self::Unreadable(format!("{topic}: orders is not a list")),
                None => vec![Value::Object(body)],
            },
            Ok(_) => return Self::Unreadable(format!("undecodable {topic}: not an object")),
            Err(error) => return Self::Unreadable(format!("undecodable {topic}: {error}")),
        };
        let mut unreadable = Vec::with_capacity(raw.len());
        let mut entries = Vec::with_capacity(raw.len());
        for entry in &raw {
            match E::deserialize(entry) {
                Ok(entry) => {
                    unreadable.push(None);
                    entries.push(entry);
                }
                Err(error) => unreadable.push(Some(format!("undecodable {topic} entry: {error}"))),
            }
        }
        Self::Readable {
            message_id,
            message_ids,
            raw,
            unreadable,
            entries,
        }
    }

    /// Moves the decoded entries out, in order, for the handler.
    pub fn take_entries(&mut self) -> Vec<E> {
        match self {
            Self::Unreadable(_) => Vec::new(),
            Self::Readable { entries, .. } => std::mem::take(entries),
        }
    }
}

/// The outbox rows a message names in [`MESSAGES_HEADER`] (none: it has no
/// such header).
fn carried(delivery: &Delivery) -> Result<Vec<Uuid>, String> {
    let Some(headers) = delivery.properties.headers() else {
        return Ok(Vec::new());
    };
    let Some(value) = headers.inner().get(MESSAGES_HEADER) else {
        return Ok(Vec::new());
    };
    let AMQPValue::FieldArray(ids) = value else {
        return Err(format!("{MESSAGES_HEADER} is not a list"));
    };
    ids.as_slice()
        .iter()
        .map(|id| match id {
            AMQPValue::LongString(text) => std::str::from_utf8(text.as_bytes())
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| format!("{MESSAGES_HEADER} holds a bad message id")),
            _ => Err(format!("{MESSAGES_HEADER} holds a bad message id")),
        })
        .collect()
}

/// What becomes of one delivery once its entries are handled.
pub enum Fate {
    /// Every entry done, duplicate or poison: the poison entries are
    /// dead-lettered, then the message recorded as processed and acknowledged.
    Settled {
        message_id: Uuid,
        /// The outbox rows it carried, to record as processed.
        message_ids: Vec<Uuid>,
        poison: Vec<(Value, String)>,
    },
    /// An entry failed for now: the whole message is held and tried again
    /// (the entries done meanwhile are duplicates then).
    Retry(anyhow::Error),
    /// Dead-lettered whole by the broker.
    Reject(String),
}

/// Puts a delivery's answers together: `answers` are the handler's, for the
/// entries that decoded, in order.
/// Returns it with each entry's label for the metrics.
pub fn fate<E>(
    letter: Letter<E>,
    answers: &mut impl Iterator<Item = Handled>,
) -> (Fate, Vec<&'static str>) {
    let (message_id, message_ids, raw, unreadable) = match letter {
        Letter::Unreadable(reason) => return (Fate::Reject(reason), vec!["poison"]),
        Letter::Readable {
            message_id,
            message_ids,
            raw,
            unreadable,
            ..
        } => (message_id, message_ids, raw, unreadable),
    };
    let mut labels = Vec::with_capacity(raw.len());
    let mut poison = Vec::new();
    let mut failure = None;
    for (entry, unreadable) in raw.into_iter().zip(unreadable) {
        let handled = match unreadable {
            Some(reason) => Handled::Poison(reason),
            None => answers
                .next()
                .unwrap_or_else(|| Handled::Retry(anyhow::anyhow!("entry left unhandled"))),
        };
        labels.push(handled.label());
        match handled {
            Handled::Done | Handled::Duplicate => {}
            Handled::Poison(reason) => poison.push((entry, reason)),
            Handled::Retry(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    let fate = match failure {
        Some(error) => Fate::Retry(error),
        None => Fate::Settled {
            message_id,
            message_ids,
            poison,
        },
    };
    (fate, labels)
}

/// Publishes each poison entry to the dead-letter exchange as a message of its
/// own (a batch of one, under its message's id, with the reason in
/// [`REASON_HEADER`]) and waits for the broker to confirm them all.
pub async fn dead_letter(
    channel: &Channel,
    exchange: &str,
    topic: &str,
    message_id: Uuid,
    poison: &[(Value, String)],
) -> anyhow::Result<()> {
    let mut confirms = Vec::with_capacity(poison.len());
    for (entry, reason) in poison {
        let body = serde_json::to_vec(&Batch {
            orders: vec![entry],
        })?;
        let mut headers = FieldTable::default();
        headers.insert(
            REASON_HEADER.into(),
            AMQPValue::LongString(LongString::from(reason.as_bytes().to_vec())),
        );
        let confirm =
            crate::saga::broker::publish(channel, exchange, topic, message_id, headers, &body)
                .await?;
        confirms.push(confirm);
    }
    for confirm in confirms {
        match confirm.await? {
            Confirmation::Ack(None) => {}
            other => anyhow::bail!("dead-lettering an entry of message {message_id}: {other:?}"),
        }
    }
    Ok(())
}
