//! What every process runs on: its [`config`], the Postgres pool and
//! migrations ([`db`]), [`metrics`], logs ([`telemetry`]) and the shared
//! [`stop`] signal.

pub mod config;
pub mod db;
pub mod metrics;
pub mod stop;
pub mod telemetry;
