//! `flashtix up [--down]`: makes Postgres, Redis and RabbitMQ reachable —
//! reusing the ones that already answer, else Docker Compose where a Docker
//! engine answers, else our own started from the installed server binaries
//! (the local driver) — and prints the URLs to use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use flashtix_chaos::local;
use flashtix_chaos::services::{self, answers, Dependency, Ports, Urls};

use super::{Failure, Outcome};
use crate::output;

#[derive(clap::Args)]
pub struct UpArgs {
    /// Stop what `up` started: the local driver's processes (only those), or
    /// the Compose services
    #[arg(long)]
    down: bool,
    /// auto: reuse services that answer on the usual ports, else Docker
    /// Compose if a Docker engine answers, else local; local: our own
    /// Postgres, Redis and RabbitMQ from the installed binaries, under --dir,
    /// on --ports; docker: the services of docker-compose.yml
    #[arg(long, default_value = "auto", value_parser = ["auto", "local", "docker"])]
    driver: String,
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

pub async fn run(args: UpArgs) -> Outcome {
    if args.down {
        return down(&args).await;
    }
    let ports = parse_ports(&args.ports).map_err(Failure::usage)?;
    let driver = match args.driver.as_str() {
        "local" => Driver::Local,
        "docker" => Driver::Docker,
        _ if all_answer(Ports::STANDARD).await => Driver::Reused,
        _ if docker_answers().await => Driver::Docker,
        _ => Driver::Local,
    };
    let (urls, how) = match driver {
        Driver::Reused => (Ports::STANDARD.urls(), "already running on the usual ports"),
        Driver::Docker => {
            compose(&["up", "-d", "--wait", "postgres", "redis", "rabbitmq"])
                .await
                .map_err(Failure::unreachable)?;
            (Ports::STANDARD.urls(), "Docker Compose")
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
        print_urls(&urls, how);
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

async fn docker_answers() -> bool {
    let info = tokio::process::Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    matches!(
        tokio::time::timeout(Duration::from_secs(10), info).await,
        Ok(Ok(status)) if status.success()
    )
}

async fn compose(args: &[&str]) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("docker")
        .arg("compose")
        .args(args)
        .status()
        .await
        .context("running docker compose (is Docker installed?)")?;
    if !status.success() {
        bail!("docker compose {} failed ({status})", args.join(" "));
    }
    Ok(())
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
        let process = local::start_detached(dependency.name(), &recipe).await?;
        std::fs::write(pid_file(&dir, dependency), process.line())?;
    }
    Ok(())
}

async fn down(args: &UpArgs) -> Outcome {
    if args.driver == "docker" {
        compose(&["down"]).await.map_err(Failure::unreachable)?;
        println!("stopped the Compose services");
        return Ok(ExitCode::SUCCESS);
    }
    let mut stopped = Vec::new();
    for dependency in Dependency::ALL {
        let path = pid_file(&args.dir, dependency);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let process = local::Detached::parse(&text).ok_or_else(|| {
            Failure::usage(anyhow!(
                "{} holds no pid and start time (written by another version?)",
                path.display()
            ))
        })?;
        if local::stop_detached(process, Duration::from_secs(30)).await {
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
    Ok(ExitCode::SUCCESS)
}

fn print_urls(urls: &Urls, how: &str) {
    let mut table = output::table(&["service", "URL"]);
    table.add_row(vec!["Postgres", urls.database.as_str()]);
    table.add_row(vec!["Redis", urls.redis.as_str()]);
    table.add_row(vec!["RabbitMQ", urls.amqp.as_str()]);
    println!("{table}");
    println!("{how}; `flashtix up --env` prints these as shell exports");
}
