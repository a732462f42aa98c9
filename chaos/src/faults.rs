//! A drill's faults, carried out. One interface, [`Faults`], over the
//! drivers: `local` (signals to processes started here, and our own fault
//! proxies), `docker` (the Docker CLI on the stack's containers, and the
//! proxies of its `faults` container) and the drill's own shell commands,
//! which replace single actions under either.
//! Flushing Redis and republishing the outbox are the same under every driver.

use std::io;
use std::path::PathBuf;

use sqlx::PgPool;
use tokio::process::Command;

use crate::drill::{Effect, Fault, ProcessAction};
use crate::driver::Driver;
use crate::proxy;

/// What one drill's faults act on.
#[derive(Clone)]
pub struct Faults {
    pub driver: Driver,
    /// The sale's database, straight (not through a proxy).
    pub pool: PgPool,
    pub namespace: String,
    /// Where the drill's commands run.
    pub dir: PathBuf,
}

impl Faults {
    /// Begins `fault`; `command` is the drill's own way to do it, if it gives one.
    pub async fn begin(&self, fault: &Fault, command: Option<&str>) -> io::Result<()> {
        if let Some(command) = command {
            return shell(command, &self.dir).await;
        }
        match fault.effect {
            Effect::Network(network) => self.driver.network(fault.target, Some(network)).await,
            Effect::Process(action) => self.driver.process(fault.target, action).await,
            Effect::Flush => self.driver.flush().await,
            Effect::Republish => republish(&self.pool, &self.namespace).await,
            Effect::Fail { share } => self.driver.fail_webhooks(Some(share)),
        }
    }

    /// Undoes a fault that has a duration: the network heals, a killed or
    /// stopped process starts again, a paused one resumes.
    pub async fn end(&self, fault: &Fault) -> io::Result<()> {
        let target = fault.target;
        match fault.effect {
            Effect::Network(_) => self.driver.network(target, None).await,
            Effect::Process(ProcessAction::Kill | ProcessAction::Stop) => {
                self.driver.process(target, ProcessAction::Start).await
            }
            Effect::Process(ProcessAction::Pause) => {
                self.driver.process(target, ProcessAction::Resume).await
            }
            Effect::Fail { .. } => self.driver.fail_webhooks(None),
            Effect::Process(_) | Effect::Flush | Effect::Republish => Ok(()),
        }
    }
}

/// A fault in a few words: "kill payments", "latency 200ms postgres".
pub fn describe(fault: &Fault) -> String {
    let target = fault.target.name();
    match fault.effect {
        Effect::Network(proxy::Toxic::Latency { delay, .. }) => {
            format!("latency {delay:?} {target}")
        }
        Effect::Network(proxy::Toxic::Bandwidth { bytes_per_second }) => {
            format!("bandwidth {bytes_per_second} B/s {target}")
        }
        Effect::Fail { share } => format!("fail {:.0}% of {target}", share * 100.0),
        _ => format!("{} {target}", fault.action.name()),
    }
}

/// Runs a drill's shell command in `dir`; what it prints goes to
/// `commands.log` there (stdout may be carrying `--json -`).
async fn shell(command: &str, dir: &std::path::Path) -> io::Result<()> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("commands.log"))?;
    let status = Command::new("sh")
        .args(["-c", command])
        .current_dir(dir)
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .await?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("`{command}` exited {status}")))
    }
}

/// Every message already published goes out again (same message id): each
/// consumer sees it twice. Nothing published yet is an error: the drill
/// would prove nothing about duplicates.
async fn republish(pool: &PgPool, namespace: &str) -> io::Result<()> {
    let republished = sqlx::query(&format!(
        "UPDATE {namespace}.outbox SET published_at = NULL WHERE published_at IS NOT NULL"
    ))
    .execute(pool)
    .await
    .map_err(io::Error::other)?
    .rows_affected();
    if republished == 0 {
        return Err(io::Error::other(
            "nothing to republish: no message had been published yet",
        ));
    }
    Ok(())
}
