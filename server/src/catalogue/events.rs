//! Events: what is on sale, its stock and its terms (price, per-user limit, hold).
//!
//! The order path reads an event's [`Terms`] through the [`Catalogue`], an
//! in-process cache: terms never change after creation, so caching them costs no
//! correctness, and a deleted event is noticed by the order writer and forgotten.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};

use crate::catalogue::seating;
use crate::runtime::db::from_row;
use flashtix_model::input::{has_control, not_null};
use flashtix_model::seating::{Plan, PlanSpec};

/// `POST /events` body, as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEventRequest {
    pub name: String,
    /// Required without `seating`; with it, the plan's places (if given, equal).
    #[serde(default, deserialize_with = "not_null")]
    pub total_tickets: Option<i64>,
    /// Required without `seating`; with it, each zone has its price.
    #[serde(default, deserialize_with = "not_null")]
    pub price_cents: Option<i64>,
    #[serde(default, deserialize_with = "not_null")]
    pub max_per_user: Option<i64>,
    #[serde(default, deserialize_with = "not_null")]
    pub hold_seconds: Option<i64>,
    /// A seating plan: zones of seats and of general admission, as the
    /// compact spec (a string) or in full (an object); `null` is refused by
    /// the plan's parser.
    #[serde(default, deserialize_with = "not_null")]
    pub seating: Option<serde_json::Value>,
    /// Where the organizer is told of each order's end.
    #[serde(default, deserialize_with = "not_null")]
    pub webhook_url: Option<String>,
}

/// A validated new event.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub name: String,
    pub total_tickets: i32,
    pub price_cents: i64,
    pub max_per_user: i32,
    pub hold_seconds: i32,
    pub plan: Option<Plan>,
    /// The subject of the organizer token that created it (none when seeded).
    pub organizer: Option<String>,
    /// Where its organizer is told of each order's end (none: nowhere).
    pub webhook_url: Option<String>,
}

pub const DEFAULT_MAX_PER_USER: i32 = 4;
pub const DEFAULT_HOLD_SECONDS: i32 = 300;
const MAX_TICKETS: i64 = 100_000_000;
const MAX_HOLD_SECONDS: i64 = 86_400;

impl NewEvent {
    /// Checks the request; the error is a message for the person who sent it.
    pub fn parse(raw: NewEventRequest) -> Result<Self, String> {
        let name = raw.name.trim().to_owned();
        // No control characters: Postgres cannot store a NUL, and the rest
        // are no part of a name.
        if name.is_empty() || name.chars().count() > 200 || has_control(&name) {
            return Err("name must be 1 to 200 printable characters".into());
        }
        let in_range = |value: i64, low: i64, high: i64, what: &str| {
            if (low..=high).contains(&value) {
                Ok(value)
            } else {
                Err(format!(
                    "{what} must be between {low} and {high}, got {value}"
                ))
            }
        };
        let plan = raw
            .seating
            .map(PlanSpec::from_json)
            .transpose()?
            .map(|spec| spec.check())
            .transpose()?;
        let (total_tickets, price_cents) = match &plan {
            None => {
                let total = raw
                    .total_tickets
                    .ok_or("total_tickets is required (or a seating plan)")?;
                let price = raw
                    .price_cents
                    .ok_or("price_cents is required (or a seating plan)")?;
                (
                    in_range(total, 1, MAX_TICKETS, "total_tickets")?,
                    in_range(price, 0, i64::MAX / MAX_TICKETS, "price_cents")?,
                )
            }
            Some(plan) => {
                let places = i64::from(plan.places());
                if raw.total_tickets.is_some_and(|total| total != places) {
                    return Err(format!(
                        "total_tickets must be left out or equal the plan's {places} places"
                    ));
                }
                if raw.price_cents.is_some() {
                    return Err("price_cents goes on each zone of a seating plan".into());
                }
                let cheapest = plan.zones.iter().map(|z| z.price_cents).min();
                (places, cheapest.unwrap_or_default())
            }
        };
        let max_per_user = in_range(
            raw.max_per_user.unwrap_or(DEFAULT_MAX_PER_USER.into()),
            1,
            10_000,
            "max_per_user",
        )?;
        let hold_seconds = in_range(
            raw.hold_seconds.unwrap_or(DEFAULT_HOLD_SECONDS.into()),
            1,
            MAX_HOLD_SECONDS,
            "hold_seconds",
        )?;
        // The ranges above fit i32.
        Ok(Self {
            name,
            total_tickets: total_tickets as i32,
            price_cents,
            max_per_user: max_per_user as i32,
            hold_seconds: hold_seconds as i32,
            plan,
            organizer: None,
            webhook_url: raw.webhook_url.map(webhook_url).transpose()?,
        })
    }
}

/// A webhook URL as given, if it is one: `http://` or `https://` and
/// printable ASCII without spaces, 8 to 2000 characters.
pub fn webhook_url(url: String) -> Result<String, String> {
    let printable = url.bytes().all(|b| b.is_ascii_graphic());
    let scheme = url.starts_with("http://") || url.starts_with("https://");
    let host = url.split_once("://").map_or("", |(_, rest)| rest);
    if !(8..=2000).contains(&url.len()) || !printable || !scheme || host.is_empty() {
        return Err(format!(
            "webhook_url must be an http:// or https:// URL of 8 to 2000 printable \
             characters without spaces, got {url:?}"
        ));
    }
    Ok(url)
}

/// An event with its live stock figures, as `GET /events/{id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub id: i64,
    pub name: String,
    pub total_tickets: i64,
    pub available_tickets: i64,
    pub pending_tickets: i64,
    pub sold_tickets: i64,
    pub price_cents: i64,
    pub max_per_user: i64,
    pub hold_seconds: i64,
}

from_row!(Event {
    id,
    name,
    total_tickets,
    available_tickets,
    pending_tickets,
    sold_tickets,
    price_cents,
    max_per_user,
    hold_seconds,
});

/// What the order path needs to know about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub event_id: i64,
    pub price_cents: i64,
    pub max_per_user: i32,
    pub hold_seconds: i32,
}

/// Creates the event, with its zones and seats if it has a plan, in one
/// transaction.
pub async fn create(pool: &PgPool, event: &NewEvent) -> sqlx::Result<Event> {
    let mut tx = pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO events (name, total_tickets, available_tickets, price_cents, max_per_user,
                             hold_seconds, organizer, webhook_url)
         VALUES ($1, $2, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(&event.name)
    .bind(event.total_tickets)
    .bind(event.price_cents)
    .bind(event.max_per_user)
    .bind(event.hold_seconds)
    .bind(&event.organizer)
    .bind(&event.webhook_url)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(plan) = &event.plan {
        seating::store(&mut tx, id, plan).await?;
    }
    tx.commit().await?;
    Ok(Event {
        id,
        name: event.name.clone(),
        total_tickets: event.total_tickets.into(),
        available_tickets: event.total_tickets.into(),
        pending_tickets: 0,
        sold_tickets: 0,
        price_cents: event.price_cents,
        max_per_user: event.max_per_user.into(),
        hold_seconds: event.hold_seconds.into(),
    })
}

const EVENT_COLUMNS: &str = "id, name, total_tickets::int8, available_tickets::int8, \
    pending_tickets::int8, sold_tickets::int8, price_cents, max_per_user::int8, hold_seconds::int8";

/// One event with its stock figures, or `None` if there is no such event.
pub async fn fetch(pool: &PgPool, id: i64) -> sqlx::Result<Option<Event>> {
    Ok(fetch_some(pool, Some(id)).await?.pop())
}

/// Every event (or just `only`), ordered by id.
pub async fn fetch_some(pool: &PgPool, only: Option<i64>) -> sqlx::Result<Vec<Event>> {
    sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE $1::int8 IS NULL OR id = $1 ORDER BY id"
    ))
    .bind(only)
    .fetch_all(pool)
    .await
}

/// SQL: whether the event whose id is the column `event_id` goes through the
/// Redis gate: it is sold by count alone. An event with a seating plan is
/// decided by Postgres alone, and has nothing in Redis (no keys, no stock to
/// give back).
pub fn gated(event_id: &str) -> String {
    format!("NOT EXISTS (SELECT 1 FROM zones z WHERE z.event_id = {event_id})")
}

/// The events the Redis gate admits orders for (see [`gated`]).
pub async fn gated_ids(pool: &PgPool) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(&format!(
        "SELECT id FROM events e WHERE {} ORDER BY id",
        gated("e.id")
    ))
    .fetch_all(pool)
    .await
}

pub async fn ids(pool: &PgPool) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar("SELECT id FROM events ORDER BY id")
        .fetch_all(pool)
        .await
}

/// Cache of event terms for the order path.
pub struct Catalogue {
    pool: PgPool,
    terms: RwLock<HashMap<i64, Terms>>,
    /// Each event's seating plan (`None`: sold by count alone); plans never
    /// change either.
    plans: RwLock<HashMap<i64, Option<Arc<Plan>>>>,
}

impl Catalogue {
    pub fn new(pool: PgPool) -> Arc<Self> {
        Arc::new(Self {
            pool,
            terms: RwLock::default(),
            plans: RwLock::default(),
        })
    }

    /// The event's terms, from the cache or Postgres; `None` if there is no such event.
    pub async fn terms(&self, event_id: i64) -> sqlx::Result<Option<Terms>> {
        if let Some(terms) = self.read().get(&event_id) {
            return Ok(Some(*terms));
        }
        let row =
            sqlx::query("SELECT price_cents, max_per_user, hold_seconds FROM events WHERE id = $1")
                .bind(event_id)
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let terms = Terms {
            event_id,
            price_cents: row.try_get("price_cents")?,
            max_per_user: row.try_get("max_per_user")?,
            hold_seconds: row.try_get("hold_seconds")?,
        };
        self.terms
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(event_id, terms);
        Ok(Some(terms))
    }

    /// The event's seating plan, from the cache or Postgres; `None` if it is
    /// sold by count alone (or does not exist).
    pub async fn plan(&self, event_id: i64) -> sqlx::Result<Option<Arc<Plan>>> {
        let cached = self
            .plans
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&event_id)
            .cloned();
        if let Some(plan) = cached {
            return Ok(plan);
        }
        let mut db = self.pool.acquire().await?;
        let plan = seating::load(&mut db, event_id).await?.map(Arc::new);
        self.plans
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(event_id, plan.clone());
        Ok(plan)
    }

    /// Drops a cached event that turned out to be gone (a reset deleted it).
    pub fn forget(&self, event_id: i64) {
        self.terms
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&event_id);
        self.plans
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&event_id);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<i64, Terms>> {
        self.terms
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
