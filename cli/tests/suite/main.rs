//! The CLI's end-to-end tests, one binary for them all: the workspace is
//! linked once, not once a file. `readme.rs` and `schedule.rs` stay test
//! binaries of their own, so nothing runs beside them.

#[path = "../common/mod.rs"]
mod common;

mod chaos;
mod cli;
mod known_bad;
mod observability;
mod storm;
