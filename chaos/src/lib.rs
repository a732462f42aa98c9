//! Failure drills for flashtix: what breaks the sale's surroundings on a
//! timeline, so a drill can prove the sale survives it.
//!
//! - [`proxy`]: a TCP fault proxy to stand between the server and a dependency
//!   (or a storm and the API), whose fault switches at runtime;
//! - [`local`]: the local driver: processes started here, and the signals a
//!   drill sends them;
//! - [`docker`]: the docker driver: the Compose stack's containers, and the
//!   Docker CLI's verbs on them;
//! - [`switchboard`]: fault proxies in another process (the docker driver's
//!   `faults` container), switched over a control port;
//! - [`services`]: Postgres, Redis and RabbitMQ of our own, for `up` and for
//!   drills that kill them;
//! - [`drill`]: drill files and their timeline of faults;
//! - [`stack`]: what a drill runs: our dependencies behind proxies, and the
//!   sale's roles as processes;
//! - [`faults`]: faults carried out, one interface over the drivers;
//! - [`windows`]: when each fault was on, as the storm's report shades it;
//! - [`recovery`]: how long the sale took to recover from each fault;
//! - [`steps`]: the operator's commands a drill runs (reset, storm, check);
//! - [`runner`]: one drill, start to verdict.

pub mod docker;
pub mod drill;
pub mod faults;
pub mod local;
pub mod proxy;
pub mod recovery;
pub mod runner;
pub mod services;
pub mod stack;
pub mod steps;
pub mod switchboard;
pub mod windows;
