//! Integration tests: each spawns the real server on a random port against real
//! Postgres and Redis, in its own schema and namespace.

mod helpers;

mod answers;
mod expiry;
mod gate;
mod history;
mod idempotency;
mod identity;
mod invariants;
mod openapi;
mod orders;
mod outbox;
mod provider;
mod refusals;
mod saga;
mod seating;
mod shutdown;
mod stream;
mod validation;
