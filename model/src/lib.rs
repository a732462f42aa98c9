//! flashtix-model: the vocabulary every part of flashtix shares, and nothing
//! that talks to a service. The sale, the CLI and the drills all speak of
//! orders, answers and verdicts in these words.
//!
//! - [`status`]: where an order is in its life ([`OrderStatus`]);
//! - [`codes`]: the API's error codes ([`ErrorCode`]);
//! - [`history`]: what a client was told, attempt by attempt ([`Attempt`]);
//! - [`report`]: what a check found ([`Report`], [`Verdict`], [`Invariant`]);
//! - [`duration`]: durations as an operator writes them;
//! - [`rng`]: seeded, repeatable numbers (splitmix64);
//! - [`seating`]: seating plans (zones, rows, seats) and the seat map;
//! - [`input`]: what every body a client sends is held to;
//! - [`roles`]: the sale's roles, its dependencies and its processes;
//! - [`names`]: the one way an enum gets its names.

pub mod codes;
pub mod duration;
pub mod history;
pub mod input;
pub mod names;
pub mod notices;
pub mod report;
pub mod rng;
pub mod roles;
pub mod seating;
pub mod status;

pub use codes::ErrorCode;
pub use history::{Attempt, Outcome};
pub use report::{Finding, Invariant, Report, Verdict};
pub use roles::{Dependency, Receiver, Role};
pub use status::OrderStatus;

#[doc(hidden)]
pub use serde as __serde;
