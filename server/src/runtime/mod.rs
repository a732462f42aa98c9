//! What every process runs on: its [`config`], the Postgres pool and
//! migrations ([`db`]), [`metrics`], how notices go out ([`notify`]), logs ([`telemetry`]) and the shared
//! [`stop`] signal.

pub mod config;
pub mod db;
pub mod metrics;
pub mod notify;
pub mod stop;
pub mod telemetry;
