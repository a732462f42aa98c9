//! The docker driver: the stack as Docker Compose runs it (`docker-compose.yml`,
//! one container per dependency and per role), plus a `faults` container of
//! fault proxies between the roles and their dependencies and in front of the
//! API. Process faults are the Docker CLI's own verbs on a role's or a
//! dependency's container (`docker kill`, `stop`, `start`, `restart`, `pause`,
//! `unpause`); flushing Redis runs `redis-cli` inside its container; network
//! faults switch the `faults` container's proxies.
//!
//! Every process fault is checked against Docker's own record: the
//! container's state (`docker inspect`) before and after must show the fault
//! took — a kill that left the container running fails the drill — and what it
//! showed is written to the drill's `docker.log`.
//!
//! The host reaches the containers only through ports published on
//! 127.0.0.1; the roles reach their dependencies by service name on the
//! Compose network, through the `faults` container.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::STOP_GRACE;
use crate::drill::{ProcessAction, Target};
use crate::proxy;
use crate::services::{free_port, Ports, Urls};
use crate::switchboard;
use flashtix_model::roles::{processes_of, Dependency, Role, PROCESS_NAMES};

mod cli;
mod compose;
mod health;

pub use cli::{docker, engine_answers};
pub use compose::Compose;
pub use health::{confirm, ready, variable, wait_healthy, Health, State};

/// The container of fault proxies the drills add.
const FAULTS: &str = "faults";
/// Inside the `faults` container: where it is switched.
const CONTROL_PORT: u16 = 7000;
/// The `faults` container's proxies in front of the dependencies: route,
/// port, where it forwards.
const ROUTES: [(&str, u16, &str); 3] = [
    ("postgres", 5432, "postgres:5432"),
    ("redis", 6379, "redis:6379"),
    ("rabbitmq", 5672, "rabbitmq:5672"),
];
/// The proxy in front of the API containers; the storm buys through it.
const FRONT: &str = "front";
/// Where a role finds the drill's public keys (the Compose file's own keys
/// volume is at `/keys`).
const KEYS_IN_CONTAINER: &str = "/drill-keys/jwks.json";
const FRONT_PORT: u16 = 8080;

/// The Compose file's variables that publish the dependencies on `ports`.
pub fn port_variables(ports: Ports) -> Vec<(String, String)> {
    vec![
        ("POSTGRES_PORT".to_owned(), ports.postgres.to_string()),
        ("REDIS_PORT".to_owned(), ports.redis.to_string()),
        ("RABBITMQ_PORT".to_owned(), ports.rabbitmq.to_string()),
    ]
}

/// The Compose stack's dependencies at these addresses (`host:port`), with
/// the credentials the Compose file gives them.
pub fn urls(postgres: &str, redis: &str, rabbitmq: &str) -> Urls {
    Urls {
        database: format!("postgres://postgres:postgres@{postgres}/flashtix"),
        redis: format!("redis://{redis}"),
        amqp: format!("amqp://guest:guest@{rabbitmq}/%2f"),
    }
}

/// `docker stop -t`'s grace.
fn grace() -> String {
    STOP_GRACE.as_secs().to_string()
}

/// The service a target names (for `api`, the first of the two).
fn service(target: Target) -> &'static str {
    match target {
        Target::Role(role) => role.first_process(),
        Target::Dependency(dependency) => dependency.name(),
        Target::Receiver(receiver) => receiver.name(),
    }
}

/// The notices' receivers are not in the Compose stack yet: a fault on one
/// is refused, not taken for a drill survived.
fn no_receivers(target: Target) -> io::Result<()> {
    match target {
        Target::Receiver(receiver) => Err(io::Error::other(format!(
            "the docker driver has no {receiver} receiver yet: run this drill with --driver local"
        ))),
        _ => Ok(()),
    }
}

/// The dependencies and the `faults` container, shared by every drill of a
/// run; each drill starts the roles afresh in its own namespace.
pub struct Dependencies {
    compose: Arc<Compose>,
    /// The override Compose file the drills write: the `faults` container,
    /// and the roles reaching their dependencies through it.
    overlay: PathBuf,
    /// Published on 127.0.0.1.
    ports: Ports,
    control: u16,
    front: u16,
}

impl Dependencies {
    /// Brings up the dependencies and the `faults` container of `compose_file`
    /// as project `project`, on free ports of 127.0.0.1, and waits until they
    /// are ready.
    pub async fn start(
        dir: &Path,
        project: &str,
        compose_file: &Path,
        env_file: Option<PathBuf>,
    ) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ports = Ports::free()?;
        let mut env = port_variables(ports);
        env.push(("FLASHTIX_PORT".to_owned(), free_port()?.to_string()));
        let overlay = dir.join("drill.compose.json");
        let compose = Compose::new(
            project,
            vec![compose_file.to_path_buf(), overlay.clone()],
            env_file,
            env,
        )
        .await?;
        let stack = Self {
            compose: Arc::new(compose),
            overlay,
            ports,
            control: free_port()?,
            front: free_port()?,
        };
        stack.write_overlay("flashtix", &[], None)?;
        let mut services: Vec<&str> = Dependency::ALL.iter().map(|d| d.name()).collect();
        services.push(FAULTS);
        let mut args = vec!["up", "-d", "--no-build"];
        args.extend(&services);
        let started = match stack.compose.run(&args).await {
            Ok(_) => stack.compose.ready(&services).await,
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            // Nothing of a stack that did not come up is left behind.
            stack.stop().await;
            return Err(e);
        }
        Ok(stack)
    }

    /// The dependencies as the host reaches them.
    pub fn direct(&self) -> Urls {
        let at = |port: u16| format!("127.0.0.1:{port}");
        urls(
            &at(self.ports.postgres),
            &at(self.ports.redis),
            &at(self.ports.rabbitmq),
        )
    }

    /// The override file: the `faults` container, and every role as a drill
    /// runs it — `flashtix serve` with the drill's flags in its namespace,
    /// through the proxies, never restarted by Docker (the drill decides).
    /// `public_keys`: the JWKS file the roles verify tokens with.
    fn write_overlay(
        &self,
        namespace: &str,
        flags: &[String],
        public_keys: Option<&Path>,
    ) -> io::Result<()> {
        let mut command = vec!["flashtix".to_owned(), "serve".to_owned()];
        command.extend(flags.iter().map(|f| literal(f)));
        let (environment, volumes) = role_environment(namespace, public_keys);
        // Docker's healthchecks all but off: the driver runs them when it
        // waits (see [`ready`]). Nothing restarts by itself: the drill decides.
        let rarely = json!({"interval": "1h"});
        let mut services = serde_json::Map::new();
        for dependency in Dependency::ALL {
            services.insert(
                dependency.name().into(),
                json!({"healthcheck": rarely, "restart": "no"}),
            );
        }
        for name in PROCESS_NAMES {
            services.insert(
                name.into(),
                json!({
                    "command": command,
                    "environment": environment,
                    "volumes": volumes,
                    "restart": "no",
                    "healthcheck": rarely,
                }),
            );
        }
        let apis: Vec<String> = processes_of(Role::Api)
            .map(|api| format!("{api}:{FRONT_PORT}"))
            .collect();
        let mut routes = ROUTES
            .map(|(name, port, upstreams)| format!("{name}={port}={upstreams}"))
            .to_vec();
        routes.push(format!("{FRONT}={FRONT_PORT}={}", apis.join(",")));
        let mut proxy = vec!["flashtix", "chaos", "proxy", "--control"];
        let control = format!("0.0.0.0:{CONTROL_PORT}");
        proxy.push(&control);
        for route in &routes {
            proxy.extend(["--route", route]);
        }
        services.insert(
            FAULTS.into(),
            json!({
                "image": "${FLASHTIX_IMAGE:-flashtix/flashtix:latest}",
                "command": proxy,
                "ports": [
                    format!("127.0.0.1:{}:{CONTROL_PORT}", self.control),
                    format!("127.0.0.1:{}:{FRONT_PORT}", self.front),
                ],
                "restart": "no",
            }),
        );
        let file = json!({"version": "3.8", "services": services});
        std::fs::write(&self.overlay, serde_json::to_vec_pretty(&file)?)
    }

    /// Starts every role afresh in `namespace` with `flags` for `flashtix
    /// serve`, and waits until each is ready.
    pub async fn start_sale(
        &self,
        dir: &Path,
        namespace: &str,
        flags: &[String],
        public_keys: &Path,
    ) -> io::Result<Sale> {
        self.write_overlay(namespace, flags, Some(public_keys))?;
        let mut args = vec!["up", "-d", "--no-build", "--no-deps", "--force-recreate"];
        args.extend(PROCESS_NAMES);
        self.compose.run(&args).await?;
        self.compose.ready(&PROCESS_NAMES).await?;
        // Every action of the drill is on these very containers: a kill,
        // start or pause keeps a container's id.
        let mut containers = BTreeMap::new();
        for service in Dependency::ALL
            .iter()
            .map(|d| d.name())
            .chain(PROCESS_NAMES)
        {
            let id = self.compose.container(service).await?;
            containers.insert(service, Arc::new(tokio::sync::Mutex::new(id)));
        }
        Ok(Sale {
            compose: self.compose.clone(),
            containers: Arc::new(containers),
            control: SocketAddr::from(([127, 0, 0, 1], self.control)),
            front: self.front,
            dir: dir.to_path_buf(),
        })
    }

    /// Removes every container, network and volume of the project.
    pub async fn stop(&self) {
        let _ = self
            .compose
            .run(&["down", "-v", "--remove-orphans", "-t", &grace()])
            .await;
    }
}

/// One drill's sale under the docker driver.
#[derive(Clone)]
pub struct Sale {
    compose: Arc<Compose>,
    /// Each service's container, locked while an action is done to it (as
    /// the local driver does one thing at a time to a process).
    containers: Arc<BTreeMap<&'static str, Arc<tokio::sync::Mutex<String>>>>,
    control: SocketAddr,
    front: u16,
    /// Where `docker.log` and the roles' logs go.
    dir: PathBuf,
}

impl Sale {
    pub fn front_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.front)
    }

    /// Switches the proxy between the roles and `target` (for a role:
    /// between the buyers and the API).
    pub async fn network(&self, target: Target, fault: Option<proxy::Toxic>) -> io::Result<()> {
        no_receivers(target)?;
        let route = match target {
            Target::Dependency(dependency) => dependency.name(),
            Target::Role(_) | Target::Receiver(_) => FRONT,
        };
        switchboard::switch(self.control, route, fault).await
    }

    /// Does `action` to `target`'s container, and checks Docker's record
    /// shows it took.
    pub async fn process(&self, target: Target, action: ProcessAction) -> io::Result<()> {
        no_receivers(target)?;
        let service = service(target);
        let id = self.containers[service].lock().await;
        let before = State::of(&id).await?;
        // `docker stop` of a stopped container succeeds: a fault on nothing
        // would pass for a drill survived.
        let stops = matches!(
            action,
            ProcessAction::Kill | ProcessAction::Stop | ProcessAction::Pause
        );
        if stops && !before.running {
            return Err(io::Error::other(format!(
                "{} is not running: there is nothing to {}",
                target.name(),
                action.name()
            )));
        }
        let grace = grace();
        let verb = match action {
            ProcessAction::Kill => vec!["kill", "-s", "KILL"],
            ProcessAction::Stop => vec!["stop", "-t", &grace],
            ProcessAction::Start if before.paused => vec!["unpause"],
            ProcessAction::Start => vec!["start"],
            ProcessAction::Restart => vec!["restart", "-t", &grace],
            ProcessAction::Pause => vec!["pause"],
            ProcessAction::Resume => vec!["unpause"],
        };
        let idle = matches!(action, ProcessAction::Start | ProcessAction::Resume)
            && before.running
            && !before.paused;
        if !idle {
            let mut args = verb.clone();
            args.push(&id);
            docker(&args).await?;
        }
        let after = State::of(&id).await?;
        let seen = confirm(action, &before, &after);
        self.witness(&format!(
            "{} {service} ({}): {}{}",
            action.name(),
            &id[..12.min(id.len())],
            if idle { "nothing to do, " } else { "" },
            seen.as_ref().unwrap_or_else(|e| e)
        ))
        .await;
        seen.map(drop).map_err(io::Error::other)
    }

    /// Redis loses every key: FLUSHALL by `redis-cli` inside its container.
    pub async fn flush(&self) -> io::Result<()> {
        let id = self.containers[Dependency::Redis.name()].lock().await;
        let answer = docker(&["exec", &id, "redis-cli", "FLUSHALL"]).await?;
        if answer.trim() == "OK" {
            Ok(())
        } else {
            Err(io::Error::other(format!("FLUSHALL answered {answer:?}")))
        }
    }

    /// Every container running and unpaused, every proxy faithful, and
    /// everything ready again.
    pub async fn heal(&self) -> io::Result<()> {
        for route in ROUTES.map(|(route, _, _)| route).into_iter().chain([FRONT]) {
            switchboard::switch(self.control, route, None).await?;
        }
        for (service, id) in self.containers.iter() {
            let id = id.lock().await;
            let state = State::of(&id).await?;
            if state.paused {
                docker(&["unpause", &id]).await?;
            } else if !state.running {
                docker(&["start", &id]).await?;
            }
            ready(service, &id).await?;
        }
        Ok(())
    }

    /// Stops the roles, their logs kept in the drill's directory.
    pub async fn stop(&self) {
        for name in PROCESS_NAMES {
            let id = self.containers[name].lock().await;
            let Ok(log) = std::fs::File::create(self.dir.join(format!("{name}.log"))) else {
                continue;
            };
            let _ = Command::new("docker")
                .args(["logs", &id])
                .stdout(log.try_clone().map(Stdio::from).unwrap_or(Stdio::null()))
                .stderr(log)
                .status()
                .await;
        }
        let grace = grace();
        let mut args = vec!["stop", "-t", &grace];
        args.extend(PROCESS_NAMES);
        let _ = self.compose.run(&args).await;
    }

    /// Appends what Docker showed to the drill's `docker.log`.
    async fn witness(&self, line: &str) {
        let at = chrono::Utc::now().format("%H:%M:%S%.3f");
        if let Ok(mut log) = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("docker.log"))
            .await
        {
            let _ = log.write_all(format!("{at} {line}\n").as_bytes()).await;
        }
    }
}

/// Compose reads `$` as the start of a variable: `text` as itself.
fn literal(text: &str) -> String {
    text.replace('$', "$$")
}

/// The environment of every role in a drill (its namespace, the
/// dependencies through the proxies, a known-bad variant asked of the
/// drill, the public keys), and the volumes it needs: the JWKS file alone,
/// never the private key beside it.
fn role_environment(namespace: &str, public_keys: Option<&Path>) -> (Value, Vec<String>) {
    let mut environment = json!({
        "FLASHTIX_NAMESPACE": namespace,
        "RUST_LOG": "warn",
    });
    let through = |route: (&str, u16, &str)| format!("{FAULTS}:{}", route.1);
    let proxied = urls(
        &through(ROUTES[0]),
        &through(ROUTES[1]),
        &through(ROUTES[2]),
    );
    for (name, value) in proxied.env() {
        environment[name] = json!(value);
    }
    if let Some(bad) = std::env::var("FLASHTIX_KNOWN_BAD")
        .ok()
        .filter(|b| !b.is_empty())
    {
        environment["FLASHTIX_KNOWN_BAD"] = json!(literal(&bad));
    }
    let mut volumes = Vec::new();
    if let Some(keys) = public_keys {
        environment["FLASHTIX_TOKEN_KEYS"] = json!(KEYS_IN_CONTAINER);
        volumes.push(format!(
            "{}:{KEYS_IN_CONTAINER}:ro",
            literal(&keys.to_string_lossy())
        ));
    }
    (environment, volumes)
}
