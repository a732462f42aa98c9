//! What a drill runs against: Postgres, Redis and RabbitMQ of our own (the
//! local driver), a fault proxy in front of each, and the sale's roles, each
//! its own `flashtix serve` process reaching the dependencies through the
//! proxies, with two API processes behind a balancing proxy the storm buys
//! through.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

use super::notices::Receivers;
use crate::drill::Target;
use crate::process::{Process, Ready, Recipe};
use crate::proxy::Proxy;
use crate::services::{self, Ports, Urls};
use flashtix_model::roles::{Dependency, Role, PROCESSES};

use super::STOP_GRACE;

const ANY_PORT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    0,
));

pub use super::Shared;

/// The dependencies, shared by every drill of a run.
#[derive(Clone)]
pub struct Dependencies {
    pub ports: Ports,
    processes: HashMap<&'static str, Shared>,
    proxies: HashMap<&'static str, Arc<Proxy>>,
}

impl Dependencies {
    /// Starts our own Postgres, Redis and RabbitMQ under `dir`, on free ports,
    /// each behind a proxy.
    pub async fn start(dir: &Path) -> io::Result<Self> {
        let ports = Ports::free()?;
        let mut processes = HashMap::new();
        let mut proxies = HashMap::new();
        for dependency in Dependency::ALL {
            let port = ports.of(dependency);
            let recipe = services::recipe(dependency, dir, port).await?;
            let mut process = Process::new(dependency.name(), recipe);
            process.start().await?;
            processes.insert(dependency.name(), Arc::new(Mutex::new(process)));
            let proxy = Proxy::start(ANY_PORT, format!("127.0.0.1:{port}")).await?;
            proxies.insert(dependency.name(), Arc::new(proxy));
        }
        Ok(Self {
            ports,
            processes,
            proxies,
        })
    }

    /// Where the dependencies really are (for the operator's commands: reset,
    /// storm, check).
    pub fn direct(&self) -> Urls {
        self.ports.urls()
    }

    /// Where the sale reaches them: through the proxies.
    pub fn proxied(&self) -> Urls {
        let port = |d: Dependency| self.proxies[d.name()].address().port();
        Ports {
            postgres: port(Dependency::Postgres),
            redis: port(Dependency::Redis),
            rabbitmq: port(Dependency::Rabbitmq),
        }
        .urls()
    }

    pub fn process(&self, dependency: Dependency) -> Shared {
        self.processes[dependency.name()].clone()
    }

    pub fn proxy(&self, dependency: Dependency) -> Arc<Proxy> {
        self.proxies[dependency.name()].clone()
    }

    /// The process and proxy of the dependency `target` names, if it names one.
    pub fn process_and_proxy(&self, target: Target) -> Option<(Shared, Arc<Proxy>)> {
        let Target::Dependency(dependency) = target else {
            return None;
        };
        Some((self.process(dependency), self.proxy(dependency)))
    }

    /// Everything running and the proxies faithful again.
    pub async fn heal(&self) -> io::Result<()> {
        for dependency in Dependency::ALL {
            self.proxy(dependency).set(None);
            let process = self.process(dependency);
            let mut process = process.lock().await;
            process.resume();
            process.start().await?;
        }
        Ok(())
    }

    pub async fn stop(&self) {
        for process in self.processes.values() {
            let _ = process.lock().await.stop(STOP_GRACE).await;
        }
    }
}

/// A sale's server processes for one drill.
#[derive(Clone)]
pub struct Sale {
    /// Named as [`PROCESSES`] names them.
    processes: Vec<(&'static str, Shared)>,
    /// Each process's base URL, in the same order (a process started again
    /// comes back on its port).
    urls: Vec<String>,
    /// The storm's way in: balances over the API processes.
    pub front: Arc<Proxy>,
    /// Where its notices go.
    pub receivers: Receivers,
}

impl Sale {
    /// Starts every role of the sale in `namespace`, reaching its dependencies
    /// at `urls`, with `flags` given to every `flashtix serve`, verifying
    /// tokens with `public_keys` (a JWKS file), telling `receivers`.
    pub async fn start(
        flashtix: &Path,
        dir: &Path,
        namespace: &str,
        urls: &Urls,
        flags: &[String],
        public_keys: &Path,
        receivers: Receivers,
    ) -> io::Result<Self> {
        let mut flags = flags.to_vec();
        flags.extend(receivers.serve_flags());
        let mut processes = Vec::new();
        let mut bases = Vec::new();
        let mut apis = Vec::new();
        for member in PROCESSES {
            let (name, role) = (member.name, member.role);
            let mut env = urls.env();
            env.push(("FLASHTIX_NAMESPACE".into(), namespace.into()));
            env.push((
                "FLASHTIX_TOKEN_KEYS".into(),
                public_keys.to_string_lossy().into_owned(),
            ));
            env.push(("RUST_LOG".into(), "warn".into()));
            let recipe = Recipe {
                program: flashtix.to_path_buf(),
                args: ["serve", "--role", role.name(), "--bind", "127.0.0.1:0"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain(flags.iter().cloned())
                    .collect(),
                env,
                log: dir.join(format!("{name}.log")),
                ready: Ready::Line("flashtix listening on ".into()),
                ready_within: Duration::from_secs(60),
                user: None,
            };
            let mut process = Process::new(name, recipe);
            let url = process.start().await?;
            let address = url.trim_start_matches("http://").to_owned();
            bases.push(url.clone());
            // Started again, it comes back on the same port, so the balancer
            // (and anyone watching it) finds it again.
            for arg in &mut process.recipe_mut().args {
                if arg == "127.0.0.1:0" {
                    arg.clone_from(&address);
                }
            }
            if role == Role::Api {
                apis.push(address);
            }
            processes.push((name, Arc::new(Mutex::new(process))));
        }
        let front = Arc::new(Proxy::balance(ANY_PORT, apis).await?);
        Ok(Self {
            processes,
            urls: bases,
            front,
            receivers,
        })
    }

    pub fn front_url(&self) -> String {
        format!("http://{}", self.front.address())
    }

    /// Every process's base URL.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The process a fault on `target` hits: for `api`, the first of the
    /// two; a receiver of the sale's notices.
    pub fn process(&self, target: Target) -> Option<Shared> {
        let role = match target {
            Target::Role(role) => role,
            Target::Receiver(receiver) => return Some(self.receivers.process(receiver)),
            Target::Dependency(_) => return None,
        };
        let name = role.first_process();
        self.processes
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.clone())
    }

    /// Every process running and the front faithful again.
    pub async fn heal(&self) -> io::Result<()> {
        self.front.set(None);
        self.receivers.heal().await?;
        for (_, process) in &self.processes {
            let mut process = process.lock().await;
            process.resume();
            process.start().await?;
        }
        Ok(())
    }

    /// SIGTERM to every process (they drain), then to the receivers;
    /// their logs and records stay.
    pub async fn stop(&self) {
        for (_, process) in &self.processes {
            let _ = process.lock().await.stop(STOP_GRACE).await;
        }
        self.receivers.stop().await;
    }
}

/// Redis loses every key (FLUSHALL, spoken in RESP on its own port).
pub(super) async fn flush_redis(port: u16) -> io::Result<()> {
    let mut redis = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    redis.write_all(b"*1\r\n$8\r\nFLUSHALL\r\n").await?;
    let mut answer = String::new();
    BufReader::new(redis).read_line(&mut answer).await?;
    if answer.starts_with("+OK") {
        Ok(())
    } else {
        Err(io::Error::other(format!("FLUSHALL answered {answer:?}")))
    }
}
