//! flashtix-server: the flash sale.
//!
//! - [`orders`]: taking buy requests (the desk, the batching writer);
//! - [`gate`]: the Redis admission gate;
//! - [`reconcile`]: repairing Redis from Postgres;
//! - [`expiry`]: expiring unpaid orders (role `sweeper`);
//! - [`outbox`]: publishing the outbox to RabbitMQ (role `relay`), on the
//!   topology of [`broker`];
//! - [`payments`]: charging orders through the provider (role `payments`);
//! - [`settlement`]: confirming, cancelling or refunding orders (role `orders`);
//! - [`consumer`]: how both consume their queues;
//! - [`events`]: what is on sale; [`seating`]: its zones and seats;
//! - [`sale`]: resetting and seeding a sale;
//! - [`invariants`]: what must always hold, for `flashtix check` and the tests;
//! - [`http`]: the API; [`startup`]: building and running a process;
//! - [`config`], [`db`], [`duration`], [`metrics`], [`telemetry`]: plumbing.

pub mod broker;
pub mod config;
pub mod consumer;
pub mod db;

pub mod events;
pub mod expiry;
pub mod gate;

pub mod http;
pub mod invariants;
pub mod known_bad;
pub mod messages;
pub mod metrics;
pub mod orders;
pub mod outbox;
pub mod payments;
pub mod reconcile;
pub mod sale;
pub mod seating;
pub mod settlement;
pub mod startup;
pub mod stop;
pub mod telemetry;
