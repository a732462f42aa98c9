//! What a drill runs against: Postgres, Redis and RabbitMQ of our own (the
//! local driver), a fault proxy in front of each, and the sale's roles, each
//! its own `flashtix serve` process reaching the dependencies through the
//! proxies, with two API processes behind a balancing proxy the storm buys
//! through.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::drill::Target;
use crate::local::{Process, Ready, Recipe};
use crate::proxy::Proxy;
use crate::services::{self, Dependency, Ports, Urls};

const ANY_PORT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    0,
));

/// How long a stopped process may take to exit before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// The dependencies, shared by every drill of a run.
pub struct Dependencies {
    pub ports: Ports,
    processes: HashMap<&'static str, Process>,
    proxies: HashMap<&'static str, Proxy>,
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
            processes.insert(dependency.name(), process);
            let proxy = Proxy::start(ANY_PORT, format!("127.0.0.1:{port}")).await?;
            proxies.insert(dependency.name(), proxy);
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

    pub fn process(&mut self, dependency: Dependency) -> &mut Process {
        self.processes
            .get_mut(dependency.name())
            .expect("every dependency")
    }

    pub fn proxy(&self, dependency: Dependency) -> &Proxy {
        &self.proxies[dependency.name()]
    }

    /// Everything running and the proxies faithful again.
    pub async fn heal(&mut self) -> io::Result<()> {
        for dependency in Dependency::ALL {
            self.proxy(dependency).set(None);
            let process = self.process(dependency);
            process.resume();
            process.start().await?;
        }
        Ok(())
    }

    pub async fn stop(&mut self) {
        for process in self.processes.values_mut() {
            let _ = process.stop(STOP_GRACE).await;
        }
    }
}

/// A sale's server processes for one drill.
pub struct Sale {
    /// `api-1`, `api-2`, `relay`, `payments`, `orders`, `sweeper`.
    processes: Vec<Process>,
    /// The storm's way in: balances over the API processes.
    pub front: Proxy,
}

/// The server roles a drill runs, one process each (the API twice).
const ROLES: [(&str, &str); 6] = [
    ("api-1", "api"),
    ("api-2", "api"),
    ("relay", "relay"),
    ("payments", "payments"),
    ("orders", "orders"),
    ("sweeper", "sweeper"),
];

impl Sale {
    /// Starts every role of the sale in `namespace`, reaching its dependencies
    /// at `urls`, with `flags` given to every `flashtix serve`.
    pub async fn start(
        flashtix: &Path,
        dir: &Path,
        namespace: &str,
        urls: &Urls,
        flags: &[String],
    ) -> io::Result<Self> {
        let mut processes = Vec::new();
        let mut apis = Vec::new();
        for (name, role) in ROLES {
            let mut env = urls.env();
            env.push(("FLASHTIX_NAMESPACE".into(), namespace.into()));
            env.push(("FLASHTIX_ADMIN_TOKEN".into(), "flashtix-chaos".into()));
            env.push(("RUST_LOG".into(), "warn".into()));
            let recipe = Recipe {
                program: flashtix.to_path_buf(),
                args: ["serve", "--role", role, "--bind", "127.0.0.1:0"]
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
            // Started again, it comes back on the same port, so the balancer
            // (and anyone watching it) finds it again.
            for arg in &mut process.recipe_mut().args {
                if arg == "127.0.0.1:0" {
                    arg.clone_from(&address);
                }
            }
            if role == "api" {
                apis.push(address);
            }
            processes.push(process);
        }
        let front = Proxy::balance(ANY_PORT, apis).await?;
        Ok(Self { processes, front })
    }

    pub fn front_url(&self) -> String {
        format!("http://{}", self.front.address())
    }

    /// The process a fault on `target` hits: for `api`, the first of the two.
    pub fn process(&mut self, target: Target) -> Option<&mut Process> {
        let name = match target {
            Target::Api => "api-1",
            Target::Relay => "relay",
            Target::Payments => "payments",
            Target::Orders => "orders",
            Target::Sweeper => "sweeper",
            _ => return None,
        };
        self.processes.iter_mut().find(|p| p.name == name)
    }

    /// Every process of the sale.
    pub fn processes(&mut self) -> impl Iterator<Item = &mut Process> {
        self.processes.iter_mut()
    }

    /// Every process running and the front faithful again.
    pub async fn heal(&mut self) -> io::Result<()> {
        self.front.set(None);
        for process in &mut self.processes {
            process.resume();
            process.start().await?;
        }
        Ok(())
    }

    /// SIGTERM to every process (they drain), then the logs stay in `dir`.
    pub async fn stop(&mut self) {
        for process in &mut self.processes {
            let _ = process.stop(STOP_GRACE).await;
        }
    }
}
