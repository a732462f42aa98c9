//! Failure drills for flashtix: what breaks the sale's surroundings on a
//! timeline, so a drill can prove the sale survives it.
//!
//! - [`proxy`]: a TCP fault proxy to stand between the server and a dependency
//!   (or a storm and the API), whose fault switches at runtime;
//! - [`process`]: processes started here (a recipe, a readiness probe), and
//!   the signals a drill sends them;
//! - [`switchboard`]: fault proxies in another process (the docker driver's
//!   `faults` container), switched over a control port;
//! - [`services`]: Postgres, Redis and RabbitMQ of our own, for `up` and for
//!   drills that kill them;
//! - [`receivers`]: a mail server and a webhook receiver of our own, whose
//!   records `check` reads;
//! - [`drill`]: drill files and their timeline of faults;
//! - [`driver`]: what a drill runs on, and who breaks it: [`driver::local`]
//!   (our dependencies behind proxies, the sale's roles as processes) or
//!   [`driver::docker`] (the Compose stack's containers, the Docker CLI's verbs
//!   on them);
//! - [`faults`]: a drill's faults carried out through its driver;
//! - [`windows`]: when each fault was on, as the storm's report shades it;
//! - [`watched`]: where a drill's sale is, for `flashtix watch --drill`;
//! - [`recovery`]: how long the sale took to recover from each fault;
//! - [`steps`]: the operator's commands a drill runs (reset, storm, check);
//! - [`runner`]: one drill, start to verdict.

pub mod drill;
pub mod driver;
pub mod faults;
pub mod process;
pub mod proxy;
pub mod receivers;
pub mod recovery;
pub mod runner;
pub mod services;
pub mod steps;
pub mod switchboard;
pub mod watched;
pub mod windows;
