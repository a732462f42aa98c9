//! `flashtix up [--down]`: makes Postgres, Redis and RabbitMQ reachable —
//! reusing the ones that already answer, else the whole Compose stack where a
//! Docker engine answers, else our own started from the installed server
//! binaries (the local driver) — and prints the URLs to use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use flashtix_chaos::driver::docker::{self, Compose};
use flashtix_chaos::process;
use flashtix_chaos::services::{self, answers, Ports, Urls};
use flashtix_model::Dependency;

use super::{Exit, Failure};
use crate::output;

#[derive(clap::Args)]
pub struct UpArgs {
    /// Stop what `up` started: the local driver's processes (only those), or
    /// the Compose stack (its containers and network)
    #[arg(long)]
    down: bool,
    /// auto: reuse services that answer on the usual ports, else Docker
    /// Compose if a Docker engine answers, else local; local: our own
    /// Postgres, Redis and RabbitMQ from the installed binaries, under --dir,
    /// on --ports; docker: the whole stack of --compose-file (the sale behind
    /// its balancer, Prometheus), its dependencies published on --ports
    #[arg(long, default_value = "auto", value_parser = ["auto", "local", "docker"])]
    driver: String,
    /// The docker driver's Compose file
    #[arg(long, default_value = "docker-compose.yml", value_name = "FILE")]
    compose_file: PathBuf,
    /// Variables for the Compose file, like the images to run
    /// (`docker/offline.env`: those scripts/offline-images builds)
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
    /// Also Grafana, with the flashtix dashboard (the docker driver; its
    /// image needs a registry)
    #[arg(long)]
    grafana: bool,
    /// Print only the URLs, as shell exports: eval "$(flashtix up --env)"
    #[arg(long)]
    env: bool,
    /// Where the local driver keeps data, logs and pids
    #[arg(long, default_value = ".flashtix")]
    dir: PathBuf,
    /// The local driver's ports for Postgres, Redis and RabbitMQ
    #[arg(
        long,
        default_value = "55432,56379,55672",
        value_name = "PG,REDIS,AMQP"
    )]
    ports: String,
}

/// How each service was made reachable.
enum Driver {
    Reused,
    Docker,
    Local,
}

pub async fn run(args: UpArgs) -> Exit {
    if args.down {
        return down(&args).await;
    }
    let ports = parse_ports(&args.ports).map_err(Failure::usage)?;
    let driver = match args.driver.as_str() {
        "local" => Driver::Local,
        // Asked for by name: say so if there is no engine (`auto` asked already).
        "docker" if !docker::engine_answers().await => {
            return Err(Failure::unreachable(anyhow!(
                "no Docker engine answers (`docker info` failed): start one (`dockerd` as \
                 root, or Docker Desktop), or use `--driver local` to run Postgres, Redis and \
                 RabbitMQ from the binaries installed here"
            )))
        }
        "docker" => Driver::Docker,
        _ if all_answer(Ports::STANDARD).await => Driver::Reused,
        _ if docker::engine_answers().await => Driver::Docker,
        _ => Driver::Local,
    };
    let mut extra = Vec::new();
    let (urls, how) = match driver {
        Driver::Reused => (Ports::STANDARD.urls(), "already running on the usual ports"),
        Driver::Docker => {
            let stack = start_docker(&args, ports)
                .await
                .map_err(Failure::unreachable)?;
            extra = stack.extra;
            (stack.urls, "the Compose stack (project flashtix)")
        }
        Driver::Local => {
            start_local(&args.dir, ports, args.env)
                .await
                .map_err(Failure::unreachable)?;
            (ports.urls(), "our own (local driver)")
        }
    };
    if args.env {
        for (name, value) in urls.env() {
            println!("export {name}='{value}'");
        }
    } else {
        print_urls(&urls, how, &extra);
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_ports(text: &str) -> anyhow::Result<Ports> {
    let ports: Vec<u16> = text
        .split(',')
        .map(|p| p.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow!("--ports {text:?}: three port numbers, like 55432,56379,55672"))?;
    match ports[..] {
        [postgres, redis, rabbitmq] => Ok(Ports {
            postgres,
            redis,
            rabbitmq,
        }),
        _ => bail!("--ports {text:?}: three port numbers (Postgres, Redis, RabbitMQ)"),
    }
}

async fn all_answer(ports: Ports) -> bool {
    for dependency in Dependency::ALL {
        if !answers(ports.of(dependency)).await {
            return false;
        }
    }
    true
}

/// The Compose project `up` manages.
const PROJECT: &str = "flashtix";

async fn compose(args: &UpArgs, ports: Option<Ports>) -> anyhow::Result<Compose> {
    if !args.compose_file.exists() {
        bail!(
            "no Compose file at {} (--compose-file)",
            args.compose_file.display()
        );
    }
    let env = ports.map_or_else(Vec::new, docker::port_variables);
    Ok(Compose::new(
        PROJECT,
        vec![args.compose_file.clone()],
        args.env_file.clone(),
        env,
    )
    .await?)
}

/// A service `up` prints: name, URL, how to sign in.
type Service = (&'static str, String, String);

/// What `up --driver docker` brought up, as the host reaches it.
struct DockerStack {
    urls: Urls,
    /// The stack's other services: name, URL, how to sign in.
    extra: Vec<Service>,
}

/// Brings the whole stack up (building the flashtix image if it is missing)
/// and waits until every container is healthy.
async fn start_docker(args: &UpArgs, ports: Ports) -> anyhow::Result<DockerStack> {
    let compose = compose(args, Some(ports)).await?;
    let mut up = vec!["up", "-d"];
    if args.grafana {
        up = vec!["--profile", "grafana", "up", "-d"];
    }
    compose.run(&up).await?;
    for (service, id) in compose.services().await? {
        // A one-shot: it made the sale's keys and is done.
        if service == "keys" {
            continue;
        }
        docker::wait_healthy(&service, &id).await?;
    }
    let published = |service: &'static str, port: u16| compose.published(service, port);
    let urls = docker::urls(
        &published("postgres", 5432).await?,
        &published("redis", 6379).await?,
        &published("rabbitmq", 5672).await?,
    );
    // The credentials the containers were given, wherever they came from.
    let compose = &compose;
    let variable = |service: &'static str, name: &'static str| async move {
        let id = compose.container(service).await?;
        docker::variable(&id, name).await
    };
    let mut extra = vec![
        (
            "the sale (balancer)",
            format!("http://{}", published("balancer", 8080).await?),
            "a token: docker compose -p flashtix run --rm keys flashtix token \
             --signing-key /keys/signing-key.pem --sub NAME [--role organizer]"
                .to_owned(),
        ),
        (
            "Prometheus",
            format!("http://{}", published("prometheus", 9090).await?),
            String::new(),
        ),
    ];
    if args.grafana {
        let user = variable("grafana", "GF_SECURITY_ADMIN_USER").await?;
        let password = variable("grafana", "GF_SECURITY_ADMIN_PASSWORD").await?;
        extra.push((
            "Grafana",
            format!("http://{}", published("grafana", 3000).await?),
            format!(
                "{} / {}",
                user.as_deref().unwrap_or("admin"),
                password.as_deref().unwrap_or("admin")
            ),
        ));
    }
    Ok(DockerStack { urls, extra })
}

fn pid_file(dir: &Path, dependency: Dependency) -> PathBuf {
    dir.join(format!("{}.pid", dependency.name()))
}

/// Starts each dependency not already answering on its port, in the
/// background, and records its pid for `--down`.
async fn start_local(dir: &Path, ports: Ports, quiet: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("finding {}", dir.display()))?;
    for dependency in Dependency::ALL {
        let port = ports.of(dependency);
        if answers(port).await {
            if !quiet {
                eprintln!("{} already answers on {port}", dependency.name());
            }
            continue;
        }
        if !quiet {
            eprintln!("starting {} on {port}", dependency.name());
        }
        let recipe = services::recipe(dependency, &dir, port)
            .await
            .with_context(|| format!("preparing {}", dependency.name()))?;
        let process = process::start_detached(dependency.name(), &recipe).await?;
        std::fs::write(pid_file(&dir, dependency), process.line())?;
    }
    Ok(())
}

async fn down(args: &UpArgs) -> Exit {
    if args.driver == "docker" {
        let compose = compose(args, None).await.map_err(Failure::unreachable)?;
        compose
            .run(&["--profile", "grafana", "down", "-v", "--remove-orphans"])
            .await
            .context("removing the Compose stack")
            .map_err(Failure::unreachable)?;
        println!("removed the Compose stack (project {PROJECT})");
        return Ok(ExitCode::SUCCESS);
    }
    let mut stopped = Vec::new();
    let mut unreadable = Vec::new();
    for dependency in Dependency::ALL {
        let path = pid_file(&args.dir, dependency);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        // One unreadable file stops nothing else from being stopped.
        let Some(process) = process::Detached::parse(&text) else {
            unreadable.push(path.display().to_string());
            continue;
        };
        if process::stop_detached(process, Duration::from_secs(30)).await {
            stopped.push(dependency.name());
        } else {
            eprintln!(
                "{} (pid {}) had already ended: nothing signalled",
                dependency.name(),
                process.pid
            );
        }
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    if stopped.is_empty() {
        println!(
            "nothing to stop: `flashtix up` started nothing under {}",
            args.dir.display()
        );
    } else {
        println!("stopped {}", stopped.join(", "));
    }
    if !unreadable.is_empty() {
        return Err(Failure::usage(anyhow!(
            "{} hold no pid and start time (written by another version?): nothing signalled \
             for them, and they are left in place",
            unreadable.join(", ")
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_urls(urls: &Urls, how: &str, extra: &[Service]) {
    let mut table = output::table(&["service", "URL", "sign in"]);
    for (service, url, sign_in) in extra {
        table.add_row(vec![*service, url.as_str(), sign_in.as_str()]);
    }
    table.add_row(vec!["Postgres", urls.database.as_str(), ""]);
    table.add_row(vec!["Redis", urls.redis.as_str(), ""]);
    table.add_row(vec!["RabbitMQ", urls.amqp.as_str(), ""]);
    println!("{table}");
    println!("{how}; `flashtix up --env` prints these as shell exports");
}
