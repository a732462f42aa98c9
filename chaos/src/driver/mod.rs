//! Who breaks and heals the stack a drill runs on, one interface over two
//! drivers: [`local`] (Postgres, Redis, RabbitMQ and the sale's roles as
//! processes started here, each behind a fault proxy of ours) and [`docker`]
//! (the Compose stack's containers and the proxies of its `faults`
//! container).

use std::io;
use std::path::Path;
use std::time::Duration;

use crate::drill::{ProcessAction, Target};
use crate::proxy;
use crate::services::Urls;

pub mod docker;
pub mod local;
pub mod notices;

use local::{flush_redis, Dependencies, Sale};
use notices::Receivers;

/// A process several faults may act on at once, one action at a time.
pub type Shared = std::sync::Arc<tokio::sync::Mutex<crate::process::Process>>;

/// How long a stopped process may take to exit before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// What the drills of one run share: the dependencies, and how the sale is
/// started on them.
pub enum Stack {
    /// Our own Postgres, Redis and RabbitMQ, the roles as processes here.
    Local(Dependencies),
    /// A Compose project: dependencies and roles in containers.
    Docker(docker::Dependencies),
}

impl Stack {
    /// Where the dependencies really are (for the operator's commands: reset,
    /// storm, check), as this machine reaches them.
    pub fn direct(&self) -> Urls {
        match self {
            Stack::Local(dependencies) => dependencies.direct(),
            Stack::Docker(stack) => stack.direct(),
        }
    }

    /// The receivers of a drill's notices, started under `dir`: a mail
    /// server and a webhook receiver of the local driver's own. The docker
    /// driver has none yet: its sale counts its notices, unsent.
    pub async fn start_receivers(&self, dir: &Path) -> io::Result<Option<Receivers>> {
        match self {
            Stack::Local(_) => Ok(Some(Receivers::start(dir).await?)),
            Stack::Docker(_) => Ok(None),
        }
    }

    /// Starts every role of the sale in `namespace`, with `flags` given to
    /// every `flashtix serve` (`flashtix`: the binary, for the local
    /// driver), telling `receivers` (from [`Stack::start_receivers`]); the
    /// driver that breaks and heals it.
    pub async fn start_sale(
        &self,
        flashtix: &Path,
        dir: &Path,
        namespace: &str,
        flags: &[String],
        public_keys: &Path,
        receivers: Option<Receivers>,
    ) -> io::Result<Driver> {
        match self {
            Stack::Local(dependencies) => {
                let urls = dependencies.proxied();
                let receivers = match receivers {
                    Some(receivers) => receivers,
                    None => Receivers::start(dir).await?,
                };
                let sale = Sale::start(
                    flashtix,
                    dir,
                    namespace,
                    &urls,
                    flags,
                    public_keys,
                    receivers,
                )
                .await?;
                Ok(Driver::Local {
                    dependencies: dependencies.clone(),
                    sale,
                })
            }
            Stack::Docker(stack) => Ok(Driver::Docker(
                stack.start_sale(dir, namespace, flags, public_keys).await?,
            )),
        }
    }

    /// Stops every dependency.
    pub async fn stop(&self) {
        match self {
            Stack::Local(dependencies) => dependencies.stop().await,
            Stack::Docker(stack) => stack.stop().await,
        }
    }
}

/// Who acts on the stack.
#[derive(Clone)]
pub enum Driver {
    /// Processes started here, each behind a proxy of ours.
    Local {
        dependencies: Dependencies,
        sale: Sale,
    },
    /// Containers of a Compose project.
    Docker(docker::Sale),
}

impl Driver {
    /// Where the storm buys.
    pub fn front_url(&self) -> String {
        match self {
            Driver::Local { sale, .. } => sale.front_url(),
            Driver::Docker(sale) => sale.front_url(),
        }
    }

    /// The processes an operator can watch, by base URL: every one of a
    /// local sale; of a Compose stack, the API behind its balancer (only
    /// its port is published).
    pub fn watched_urls(&self) -> Vec<String> {
        match self {
            Driver::Local { sale, .. } => sale.urls().to_vec(),
            Driver::Docker(sale) => vec![sale.front_url()],
        }
    }

    /// Switches the network fault between the sale and `target` (for a role:
    /// between the buyers and the API).
    pub(crate) async fn network(
        &self,
        target: Target,
        fault: Option<proxy::Toxic>,
    ) -> io::Result<()> {
        match self {
            Driver::Local { dependencies, sale } => {
                match (dependencies.process_and_proxy(target), target) {
                    (Some((_, proxy)), _) => proxy.set(fault),
                    (None, Target::Receiver(_)) => sale.receivers.mail_proxy().set(fault),
                    (None, _) => sale.front.set(fault),
                }
                Ok(())
            }
            Driver::Docker(sale) => sale.network(target, fault).await,
        }
    }

    /// Does a process action (kill, stop, start, restart, pause, resume) to
    /// `target`.
    pub(crate) async fn process(&self, target: Target, action: ProcessAction) -> io::Result<()> {
        match self {
            Driver::Local { dependencies, sale } => {
                let process = match dependencies.process_and_proxy(target) {
                    Some((process, _)) => process,
                    None => sale.process(target).expect("every target is a process"),
                };
                let mut process = process.lock().await;
                // A fault on a process that is not there would break nothing
                // and pass for a drill survived.
                if matches!(
                    action,
                    ProcessAction::Kill | ProcessAction::Stop | ProcessAction::Pause
                ) && !process.is_alive()
                {
                    return Err(io::Error::other(format!(
                        "{} is not running: there is nothing to {}",
                        target.name(),
                        action.name()
                    )));
                }
                match action {
                    ProcessAction::Kill => process.kill().await,
                    ProcessAction::Stop => process.stop(STOP_GRACE).await.map(drop),
                    ProcessAction::Start => process.start().await.map(drop),
                    ProcessAction::Restart => process.restart(STOP_GRACE).await.map(drop),
                    ProcessAction::Pause => {
                        process.pause();
                        Ok(())
                    }
                    ProcessAction::Resume => {
                        process.resume();
                        Ok(())
                    }
                }
            }
            Driver::Docker(sale) => sale.process(target, action).await,
        }
    }

    /// The webhook receiver answers 500 to `share` of deliveries (`None`:
    /// to none).
    pub(crate) fn fail_webhooks(&self, share: Option<f64>) -> io::Result<()> {
        match self {
            Driver::Local { sale, .. } => sale.receivers.receipts.fail_webhooks(share),
            Driver::Docker(_) => Err(io::Error::other(
                "the docker driver has no webhooks receiver yet: run this drill with --driver local",
            )),
        }
    }

    /// Redis loses every key.
    pub(crate) async fn flush(&self) -> io::Result<()> {
        match self {
            Driver::Local { dependencies, .. } => flush_redis(dependencies.ports.redis).await,
            Driver::Docker(sale) => sale.flush().await,
        }
    }

    /// Everything running and every proxy faithful again.
    pub async fn heal(&self) -> io::Result<()> {
        match self {
            Driver::Local { dependencies, sale } => {
                dependencies.heal().await?;
                sale.heal().await
            }
            Driver::Docker(sale) => sale.heal().await,
        }
    }

    /// Stops the sale's roles (the dependencies stay for the next drill).
    pub async fn stop_sale(&self) {
        match self {
            Driver::Local { sale, .. } => sale.stop().await,
            Driver::Docker(sale) => sale.stop().await,
        }
    }
}
