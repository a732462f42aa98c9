//! flashtix-server: the flash sale. Its folders follow an order's way
//! through it (`docs/ARCHITECTURE.md` draws the map):
//!
//! - [`http`]: the API, and the one place failures become HTTP answers;
//! - [`orders`]: taking buy requests (the desk, the batching writer);
//! - [`gate`]: the Redis admission gate, and repairing it from Postgres;
//! - [`saga`]: after the commit: the outbox relayed to RabbitMQ, payments,
//!   settlement, expiry of unpaid holds;
//! - [`notices`]: telling each buyer (mail) and organizer (webhook) how
//!   each order ended;
//! - [`stream`]: the live stock stream buyers watch;
//! - [`identity`]: who is asking: buyer and organizer tokens, the buyers' rate;
//! - [`catalogue`]: what is on sale: events, their zones and seats;
//! - [`sale`]: resetting and seeding a sale;
//! - [`invariants`]: what must always hold, for `flashtix check` and the tests;
//! - [`runtime`]: configuration, the database pool, metrics, logs, stopping;
//! - [`startup`]: building and running a process of any role.

pub mod catalogue;
pub mod gate;
pub mod http;
pub mod identity;
pub mod invariants;
pub mod known_bad;
pub mod notices;
pub mod orders;
pub mod runtime;
pub mod saga;
pub mod sale;
pub mod startup;
pub mod stream;
