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
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::STOP_GRACE;
use crate::drill::{Action, Target};
use crate::proxy;
use crate::services::{free_port, Dependency, Ports, Urls};
use crate::switchboard;

/// The sale's roles, one container each (the API twice), as
/// `docker-compose.yml` names them; the dependencies are named as
/// [`Dependency::name`] says.
pub const ROLES: [&str; 6] = ["api1", "api2", "relay", "payments", "orders", "sweeper"];
/// The container of fault proxies the drills add.
const FAULTS: &str = "faults";
/// Inside the `faults` container: where it is switched.
const CONTROL_PORT: u16 = 7000;
/// The `faults` container's proxies: route, port, where it forwards. `front`
/// stands in front of the API containers; the storm buys through it.
const ROUTES: [(&str, u16, &str); 4] = [
    ("postgres", 5432, "postgres:5432"),
    ("redis", 6379, "redis:6379"),
    ("rabbitmq", 5672, "rabbitmq:5672"),
    ("front", 8080, "api1:8080,api2:8080"),
];
const FRONT_PORT: u16 = ROUTES[3].1;

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
/// How long a container may take to become healthy.
const HEALTHY_WITHIN: Duration = Duration::from_secs(120);

/// Runs `docker ARGS`; its stdout, or an error carrying its stderr.
pub async fn docker(args: &[&str]) -> io::Result<String> {
    output(
        Command::new("docker").args(args),
        &format!("docker {}", args.join(" ")),
    )
    .await
}

async fn output(command: &mut Command, what: &str) -> io::Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| io::Error::other(format!("{what}: {e} (is Docker installed?)")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A Compose failure to fetch an image, with what to do about it: where no
/// registry can be reached, the images can be built on this machine. Only
/// the last lines are read: Compose prints progress (`Pulled`) before the
/// error that stopped it.
fn explain_image_fetch(error: io::Error) -> io::Error {
    const SIGNS: [&str; 7] = [
        "pull access denied",
        "failed to resolve",
        "no such host",
        "manifest unknown",
        "toomanyrequests",
        "error pulling image",
        "registry-1.docker.io",
    ];
    let said = error.to_string();
    let last: Vec<&str> = said.lines().rev().take(3).collect();
    let fetching = last.iter().any(|line| {
        let line = line.to_lowercase();
        SIGNS.iter().any(|sign| line.contains(sign))
    });
    if !fetching {
        return error;
    }
    io::Error::other(format!(
        "{said}\n\nDocker could not fetch an image (no registry reachable from here?): build \
         the images on this machine with `scripts/offline-images` (as root, with dockerd \
         running) and use them with `--env-file docker/offline.env`"
    ))
}

/// Whether a Docker engine answers.
pub async fn engine_answers() -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(10), docker(&["info"])).await,
        Ok(Ok(_))
    )
}

/// Docker Compose for one project: `docker compose` (v2) where it exists,
/// else `docker-compose` (v1).
pub struct Compose {
    program: Vec<String>,
    project: String,
    files: Vec<PathBuf>,
    env_file: Option<PathBuf>,
    /// Variables the Compose file reads (published ports).
    env: Vec<(String, String)>,
}

impl Compose {
    pub async fn new(
        project: &str,
        files: Vec<PathBuf>,
        env_file: Option<PathBuf>,
        env: Vec<(String, String)>,
    ) -> io::Result<Self> {
        let answers = |program: &'static [&'static str]| async move {
            Command::new(program[0])
                .args(&program[1..])
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success())
        };
        let program: &[&str] = if answers(&["docker", "compose"]).await {
            &["docker", "compose"]
        } else if answers(&["docker-compose"]).await {
            &["docker-compose"]
        } else {
            return Err(io::Error::other(
                "Docker Compose is not installed: neither `docker compose` (v2) nor \
                 `docker-compose` (v1) runs here; install one (Debian: apt-get install \
                 docker-compose)",
            ));
        };
        let program = program.iter().map(|part| part.to_string()).collect();
        Ok(Self {
            program,
            project: project.to_owned(),
            files,
            env_file,
            env,
        })
    }

    fn command(&self, args: &[&str]) -> (Command, String) {
        let mut command = Command::new(&self.program[0]);
        command.args(&self.program[1..]);
        if let Some(env_file) = &self.env_file {
            command.arg("--env-file").arg(env_file);
        }
        command.args(["-p", &self.project]);
        for file in &self.files {
            command.arg("-f").arg(file);
        }
        command.args(args).envs(self.env.iter().cloned());
        let what = format!("{} {}", self.program.join(" "), args.join(" "));
        (command, what)
    }

    /// Runs a Compose command; its stdout.
    pub async fn run(&self, args: &[&str]) -> io::Result<String> {
        let (mut command, what) = self.command(args);
        output(&mut command, &what)
            .await
            .map_err(explain_image_fetch)
    }

    /// The container of `service` (there is one per service), running or not.
    pub async fn container(&self, service: &str) -> io::Result<String> {
        let id = self.run(&["ps", "-a", "-q", service]).await?;
        match id.lines().next() {
            Some(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
            _ => Err(io::Error::other(format!("no container for {service}"))),
        }
    }

    /// Waits until every service named is ready: its healthcheck's command,
    /// run now, passes (see [`ready`]).
    pub async fn ready(&self, services: &[&str]) -> io::Result<()> {
        for service in services {
            let id = self.container(service).await?;
            ready(service, &id).await?;
        }
        Ok(())
    }

    /// Every container of the project, by service.
    pub async fn services(&self) -> io::Result<Vec<(String, String)>> {
        let mut services = Vec::new();
        for id in self.run(&["ps", "-a", "-q"]).await?.split_whitespace() {
            let service = docker(&[
                "inspect",
                "-f",
                "{{index .Config.Labels \"com.docker.compose.service\"}}",
                id,
            ])
            .await?;
            services.push((service.trim().to_owned(), id.to_owned()));
        }
        Ok(services)
    }

    /// Where `service`'s `port` is published on the host: `127.0.0.1:PORT`.
    pub async fn published(&self, service: &str, port: u16) -> io::Result<String> {
        let address = self.run(&["port", service, &port.to_string()]).await?;
        match address.trim() {
            "" | ":0" => Err(io::Error::other(format!(
                "{service}'s port {port} is not published"
            ))),
            address => Ok(address.to_owned()),
        }
    }
}

/// The value of variable `name` in container `id`'s environment, if set.
pub async fn variable(id: &str, name: &str) -> io::Result<Option<String>> {
    let env = docker(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        id,
    ])
    .await?;
    Ok(env
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned))
}

/// Waits until container `id` of `service` is healthy as Docker's own
/// healthcheck says (or running, if it has none).
pub async fn wait_healthy(service: &str, id: &str) -> io::Result<()> {
    wait(service, id, "healthy", |state| async move {
        Ok(state.is_healthy())
    })
    .await
}

/// Waits until container `id` of `service` is ready: the command of its
/// healthcheck (from the Compose file), run now by `docker exec`, passes; a
/// container with none is ready once it runs. The drills run the checks
/// themselves, only while they wait: Docker's own every 2 s cost an idle
/// stack over half of one core here (`rabbitmq-diagnostics` boots an Erlang
/// VM each time), which a storm on two cores must not have to share.
pub async fn ready(service: &str, id: &str) -> io::Result<()> {
    let test = docker(&["inspect", "-f", "{{json .Config.Healthcheck}}", id]).await?;
    let probe = probe(test.trim())
        .map_err(|e| io::Error::other(format!("{service}'s healthcheck: {e}")))?;
    wait(service, id, "ready", |state| {
        let probe = probe.clone();
        async move {
            if !state.running || state.paused {
                return Ok(false);
            }
            let Some(probe) = probe else { return Ok(true) };
            let mut args = vec!["exec", id];
            args.extend(probe.iter().map(String::as_str));
            Ok(Command::new("docker")
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await?
                .success())
        }
    })
    .await
}

/// The command a healthcheck runs (`docker inspect`'s `.Config.Healthcheck`
/// as JSON), as `docker exec` arguments; `None` when there is none.
fn probe(healthcheck: &str) -> Result<Option<Vec<String>>, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Healthcheck {
        #[serde(default)]
        test: Vec<String>,
    }
    if healthcheck == "null" {
        return Ok(None);
    }
    let check: Healthcheck = serde_json::from_str(healthcheck).map_err(|e| e.to_string())?;
    match check.test.split_first() {
        None => Ok(None),
        Some((kind, _)) if kind == "NONE" => Ok(None),
        Some((kind, args)) if kind == "CMD" && !args.is_empty() => Ok(Some(args.to_vec())),
        Some((kind, [shell])) if kind == "CMD-SHELL" => {
            Ok(Some(vec!["sh".into(), "-c".into(), shell.clone()]))
        }
        Some(_) => Err(format!("cannot run {:?}", check.test)),
    }
}

/// Polls container `id` until `done` says so, it stops, or
/// [`HEALTHY_WITHIN`] passes.
async fn wait<F, Fut>(service: &str, id: &str, what: &str, done: F) -> io::Result<()>
where
    F: Fn(State) -> Fut,
    Fut: std::future::Future<Output = io::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + HEALTHY_WITHIN;
    loop {
        let state = State::of(id).await?;
        let (running, status, exit_code) = (state.running, state.status.clone(), state.exit_code);
        if done(state).await? {
            return Ok(());
        }
        if !running && status != "created" {
            return Err(io::Error::other(format!(
                "{service} stopped ({status}, exit code {exit_code}) instead of becoming {what} \
                 (docker logs {id})"
            )));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "{service} not {what} within {HEALTHY_WITHIN:?} (docker logs {id})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A container's state as `docker inspect` records it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct State {
    pub status: String,
    pub running: bool,
    pub paused: bool,
    pub exit_code: i64,
    pub started_at: String,
    pub finished_at: String,
    #[serde(default)]
    pub health: Option<Health>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    pub status: String,
}

impl State {
    pub async fn of(container: &str) -> io::Result<State> {
        let text = docker(&["inspect", "-f", "{{json .State}}", container]).await?;
        serde_json::from_str(text.trim())
            .map_err(|e| io::Error::other(format!("docker inspect {container}: {e}")))
    }

    fn is_healthy(&self) -> bool {
        match &self.health {
            Some(health) => health.status == "healthy",
            None => self.running && !self.paused,
        }
    }
}

/// What Docker's record shows an action did, from the container's state
/// before and after it; an error when the record says it did not take.
pub fn confirm(action: Action, before: &State, after: &State) -> Result<String, String> {
    let took = match action {
        Action::Kill => before.running && after.status == "exited" && after.exit_code == 137,
        Action::Stop => before.running && after.status == "exited",
        Action::Start => after.running && (before.running || after.started_at != before.started_at),
        Action::Restart => after.running && after.started_at != before.started_at,
        Action::Pause => after.paused,
        Action::Resume => after.running && !after.paused,
        other => return Err(format!("{} is no container action", other.name())),
    };
    let seen = match after.status.as_str() {
        "exited" => format!(
            "exited, exit code {}, at {}",
            after.exit_code, after.finished_at
        ),
        "running" => format!("running since {}", after.started_at),
        status => status.to_owned(),
    };
    if took {
        Ok(seen)
    } else {
        Err(format!(
            "Docker's record says the {} did not take: {seen} (was {})",
            action.name(),
            before.status
        ))
    }
}

/// The service a target names (for `api`, the first of the two).
fn service(target: Target) -> &'static str {
    match target {
        Target::Api => "api1",
        other => other.name(),
    }
}

/// The dependencies and the `faults` container, shared by every drill of a
/// run; each drill starts the roles afresh in its own namespace.
pub struct Stack {
    compose: Arc<Compose>,
    /// The override Compose file the drills write: the `faults` container,
    /// and the roles reaching their dependencies through it.
    overlay: PathBuf,
    /// Published on 127.0.0.1.
    ports: Ports,
    control: u16,
    front: u16,
}

impl Stack {
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
        stack.write_overlay("flashtix", &[])?;
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
    fn write_overlay(&self, namespace: &str, flags: &[String]) -> io::Result<()> {
        // Compose reads `$` as the start of a variable.
        let literal = |text: &str| text.replace('$', "$$");
        let mut command = vec!["flashtix".to_owned(), "serve".to_owned()];
        command.extend(flags.iter().map(|f| literal(f)));
        let mut environment = json!({
            "FLASHTIX_NAMESPACE": namespace,
            "FLASHTIX_ADMIN_TOKEN": "flashtix-chaos",
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
        // A known-bad variant asked of the drill reaches the roles.
        if let Some(bad) = std::env::var("FLASHTIX_KNOWN_BAD")
            .ok()
            .filter(|b| !b.is_empty())
        {
            environment["FLASHTIX_KNOWN_BAD"] = json!(literal(&bad));
        }
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
        for role in ROLES {
            services.insert(
                role.into(),
                json!({
                    "command": command,
                    "environment": environment,
                    "restart": "no",
                    "healthcheck": rarely,
                }),
            );
        }
        let routes = ROUTES.map(|(name, port, upstreams)| format!("{name}={port}={upstreams}"));
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
    ) -> io::Result<Sale> {
        self.write_overlay(namespace, flags)?;
        let mut args = vec!["up", "-d", "--no-build", "--no-deps", "--force-recreate"];
        args.extend(ROLES);
        self.compose.run(&args).await?;
        self.compose.ready(&ROLES).await?;
        // Every action of the drill is on these very containers: a kill,
        // start or pause keeps a container's id.
        let mut containers = BTreeMap::new();
        for service in Dependency::ALL.iter().map(|d| d.name()).chain(ROLES) {
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
    pub async fn network(&self, target: Target, fault: Option<proxy::Fault>) -> io::Result<()> {
        let route = if target.is_dependency() {
            target.name()
        } else {
            "front"
        };
        switchboard::switch(self.control, route, fault).await
    }

    /// Does `action` to `target`'s container, and checks Docker's record
    /// shows it took.
    pub async fn process(&self, target: Target, action: Action) -> io::Result<()> {
        let service = service(target);
        let id = self.containers[service].lock().await;
        let before = State::of(&id).await?;
        // `docker stop` of a stopped container succeeds: a fault on nothing
        // would pass for a drill survived.
        if matches!(action, Action::Kill | Action::Stop | Action::Pause) && !before.running {
            return Err(io::Error::other(format!(
                "{} is not running: there is nothing to {}",
                target.name(),
                action.name()
            )));
        }
        let grace = grace();
        let verb = match action {
            Action::Kill => vec!["kill", "-s", "KILL"],
            Action::Stop => vec!["stop", "-t", &grace],
            Action::Start if before.paused => vec!["unpause"],
            Action::Start => vec!["start"],
            Action::Restart => vec!["restart", "-t", &grace],
            Action::Pause => vec!["pause"],
            Action::Resume => vec!["unpause"],
            other => unreachable!("{} is no process action", other.name()),
        };
        let idle =
            matches!(action, Action::Start | Action::Resume) && before.running && !before.paused;
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
        for (route, _, _) in ROUTES {
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
        for role in ROLES {
            let id = self.containers[role].lock().await;
            let Ok(log) = std::fs::File::create(self.dir.join(format!("{role}.log"))) else {
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
        args.extend(ROLES);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: &str, exit_code: i64, started_at: &str) -> State {
        State {
            status: status.into(),
            running: status == "running" || status == "paused",
            paused: status == "paused",
            exit_code,
            started_at: started_at.into(),
            finished_at: "2026-11-29T10:00:05Z".into(),
            health: None,
        }
    }

    /// The record must show the action took: a kill that left the container
    /// running, or a restart that did not start it anew, fails.
    #[test]
    fn docker_s_record_confirms_an_action_or_says_it_did_not_take() {
        let running = state("running", 0, "2026-11-29T10:00:00Z");
        let killed = state("exited", 137, "2026-11-29T10:00:00Z");
        let stopped = state("exited", 0, "2026-11-29T10:00:00Z");
        let paused = state("paused", 0, "2026-11-29T10:00:00Z");
        let anew = state("running", 0, "2026-11-29T10:00:07Z");

        assert!(confirm(Action::Kill, &running, &killed).is_ok());
        assert!(confirm(Action::Kill, &running, &running).is_err());
        assert!(
            confirm(Action::Kill, &running, &stopped).is_err(),
            "137 or it was no SIGKILL"
        );
        assert!(confirm(Action::Stop, &running, &stopped).is_ok());
        assert!(confirm(Action::Pause, &running, &paused).is_ok());
        assert!(confirm(Action::Pause, &running, &running).is_err());
        assert!(confirm(Action::Resume, &paused, &running).is_ok());
        assert!(confirm(Action::Resume, &paused, &paused).is_err());
        assert!(confirm(Action::Restart, &running, &anew).is_ok());
        assert!(confirm(Action::Restart, &running, &running).is_err());
        assert!(confirm(Action::Start, &killed, &anew).is_ok());
        assert!(confirm(Action::Start, &killed, &killed).is_err());
        let said = confirm(Action::Kill, &running, &killed).unwrap();
        assert!(said.contains("exit code 137"), "{said}");
    }

    #[test]
    fn a_healthcheck_becomes_the_command_the_driver_runs() {
        let cmd = r#"{"Test":["CMD","curl","-fs","http://127.0.0.1:8080/ready"],"Interval":3600000000000}"#;
        assert_eq!(
            probe(cmd).unwrap(),
            Some(vec![
                "curl".into(),
                "-fs".into(),
                "http://127.0.0.1:8080/ready".into()
            ])
        );
        let shell = r#"{"Test":["CMD-SHELL","pg_isready -h 127.0.0.1"]}"#;
        assert_eq!(
            probe(shell).unwrap(),
            Some(vec![
                "sh".into(),
                "-c".into(),
                "pg_isready -h 127.0.0.1".into()
            ])
        );
        assert_eq!(probe("null").unwrap(), None);
        assert_eq!(probe(r#"{"Test":["NONE"]}"#).unwrap(), None);
        assert!(
            probe(r#"{"Test":["CMD"]}"#).is_err(),
            "a command to run, or an error"
        );
    }

    #[test]
    fn docker_s_state_reads_as_inspect_writes_it() {
        let text = r#"{"Status":"running","Running":true,"Paused":false,"Restarting":false,
            "OOMKilled":false,"Dead":false,"Pid":42,"ExitCode":0,"Error":"",
            "StartedAt":"2026-11-29T10:00:00.1Z","FinishedAt":"0001-01-01T00:00:00Z",
            "Health":{"Status":"healthy","FailingStreak":0,"Log":[]}}"#;
        let state: State = serde_json::from_str(text).unwrap();
        assert!(state.is_healthy());
        let starting = State {
            health: Some(Health {
                status: "starting".into(),
            }),
            ..state
        };
        assert!(!starting.is_healthy());
    }
}
