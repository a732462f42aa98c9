//! The CLI's end-to-end tests that may run beside each other, one binary
//! for them all: the workspace is linked once for them, not once a file.
//! The drills (`chaos.rs`), the known mistakes (`known_bad.rs`, which time
//! what a server does), the README (`readme.rs`) and the schedule
//! (`schedule.rs`) stay binaries of their own: cargo runs test binaries one
//! after another, so nothing of the others runs beside them.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod dashboard;
mod identity;
mod notices;
mod observability;
mod storm;
mod watch;
