//! The names of one event's Redis keys (the gate's module docs say what
//! each holds), and a hold as its sorted-set member.

use uuid::Uuid;

use crate::runtime::config::Namespace;

/// One reservation, as admitted by Redis and then written to Postgres.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub order_id: Uuid,
    pub event_id: i64,
    pub user_id: String,
    pub idempotency_key: String,
    pub quantity: i32,
}

impl Hold {
    /// The sorted-set member; user ids and keys contain no control characters.
    pub(super) fn member(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            self.order_id, self.quantity, self.user_id, self.idempotency_key
        )
    }

    pub(super) fn from_member(event_id: i64, member: &str) -> Option<Self> {
        let mut parts = member.splitn(4, '\n');
        Some(Self {
            order_id: parts.next()?.parse().ok()?,
            quantity: parts.next()?.parse().ok()?,
            user_id: parts.next()?.to_owned(),
            idempotency_key: parts.next()?.to_owned(),
            event_id,
        })
    }

    pub(super) fn key_field(&self) -> String {
        key_field(&self.user_id, &self.idempotency_key)
    }
}

/// The field of (user, key) in an event's `keys` hash.
pub fn key_field(user_id: &str, idempotency_key: &str) -> String {
    format!("{user_id}\n{idempotency_key}")
}

/// The names of one event's Redis keys (the module docs say what each holds).
pub(super) struct EventKeys {
    pub(super) stock: String,
    pub(super) buyers: String,
    pub(super) keys: String,
    pub(super) holds: String,
    pub(super) seq: String,
    pub(super) returning: String,
    pub(super) returned: String,
    pub(super) seeding: String,
}

impl EventKeys {
    pub(super) fn new(namespace: &Namespace, event_id: i64) -> Self {
        let name = |what: &str| format!("{namespace}:{{ev:{event_id}}}:{what}");
        Self {
            stock: name("stock"),
            buyers: name("buyers"),
            keys: name("keys"),
            holds: name("holds"),
            seq: name("seq"),
            returning: name("returning"),
            returned: name("returned"),
            seeding: name("seeding"),
        }
    }

    /// The keys the hold scripts (reserve, release) take, in their order.
    pub(super) fn of_holds(self) -> [String; 6] {
        [
            self.stock,
            self.buyers,
            self.keys,
            self.holds,
            self.seq,
            self.returning,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_members_round_trip() {
        let hold = Hold {
            order_id: Uuid::now_v7(),
            event_id: 7,
            user_id: "user with spaces:and:colons".into(),
            idempotency_key: "key\u{e9}-1".into(),
            quantity: 3,
        };
        assert_eq!(Hold::from_member(7, &hold.member()), Some(hold));
        assert_eq!(Hold::from_member(7, "not a member"), None);
    }
}
