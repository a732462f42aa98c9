//! `flashtix demo`: a whole flash sale on this machine in under a minute — serve
//! every role in the background, reset, the flash-sale scenario at a smaller
//! size, settle, check, and the tables. Exits as `check` does.

use std::path::Path;
use std::process::{ExitCode, Stdio};

use anyhow::{anyhow, Context};
use flashtix_server::config::ConnectionArgs;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use super::storm::{Given, Scenario, StormArgs};
use super::{reset, Failure, Outcome, Services};

/// The flash-sale scenario, built in so the demo runs from any directory.
const FLASH_SALE: &str = include_str!("../../../scenarios/flash-sale.toml");

#[derive(clap::Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub connections: ConnectionArgs,
    /// Tickets on sale
    #[arg(long, default_value_t = 5000)]
    tickets: i64,
    /// Buyers, every one arriving within --spike
    #[arg(long, default_value_t = 100_000)]
    buyers: u64,
    /// The window the buyers arrive in
    #[arg(long, default_value = "2s")]
    spike: String,
}

pub async fn run(args: DemoArgs) -> Outcome {
    let mut scenario = Scenario::parse(FLASH_SALE).context("the built-in flash-sale scenario")?;
    let mut sale = scenario.sale.take().unwrap_or_default();
    sale.tickets = args.tickets;
    scenario.description = None;
    eprintln!(
        "demo: a flash sale of {} tickets, {} buyers arriving within {}",
        args.tickets, args.buyers, args.spike
    );

    Services::connect(&args.connections)
        .await
        .map_err(|failure| Failure {
            error: failure.error.context(
                "the demo needs Postgres, Redis and RabbitMQ; start them (see the README) \
             or point --database-url, --redis-url and --amqp-url at yours",
            ),
            ..failure
        })?;
    let (namespace, events) = reset::seed(&args.connections, &sale, false).await?;
    reset::print_seeded(&namespace, &events);

    let log = std::env::temp_dir().join(format!("flashtix-demo-{}.log", std::process::id()));
    let server = Server::start(&args.connections, &log).await?;
    eprintln!(
        "demo: the sale serves at {} (every role; its log: {})",
        server.url,
        log.display()
    );

    let resolved = args.connections.resolve().map_err(Failure::usage)?;
    let buyers = args.buyers.to_string();
    let storm: StormArgs = super::parse_flags(&[
        "--target",
        &server.url,
        "--database-url",
        &resolved.database_url,
        "--redis-url",
        &resolved.redis_url,
        "--amqp-url",
        &resolved.amqp_url,
        "--namespace",
        resolved.namespace.as_str(),
        "--buyers",
        &buyers,
        "--spike",
        &args.spike,
    ])
    .map_err(|error| Failure::usage(error.into()))?;
    let given = Given::of(&["buyers", "spike"]);
    let outcome = super::storm::run_scenario(storm, scenario, &given).await;
    drop(server);
    if matches!(&outcome, Ok(code) if *code == ExitCode::SUCCESS) {
        let _ = std::fs::remove_file(&log);
    }
    outcome
}

/// `flashtix serve --role all` in a child process, killed when dropped.
struct Server {
    _child: Child,
    /// Kept open: the server may write more, and a closed pipe would fail it.
    _stdout: BufReader<ChildStdout>,
    url: String,
}

impl Server {
    async fn start(connections: &ConnectionArgs, log: &Path) -> Result<Self, Failure> {
        let resolved = connections.resolve().map_err(Failure::usage)?;
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("creating the server's log {}", log.display()))?;
        let mut child = Command::new(std::env::current_exe().context("finding flashtix itself")?)
            .args(["serve", "--bind", "127.0.0.1:0", "--role", "all"])
            .env("FLASHTIX_DATABASE_URL", &resolved.database_url)
            .env("FLASHTIX_REDIS_URL", &resolved.redis_url)
            .env("FLASHTIX_AMQP_URL", &resolved.amqp_url)
            .env("FLASHTIX_NAMESPACE", resolved.namespace.as_str())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .context("starting `flashtix serve`")?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut first_line = String::new();
        stdout
            .read_line(&mut first_line)
            .await
            .context("reading the server's first line")?;
        let url = first_line
            .trim()
            .strip_prefix("flashtix listening on ")
            .ok_or_else(|| anyhow!("the server did not start; its log is {}", log.display()))?
            .to_owned();
        Ok(Self {
            _child: child,
            _stdout: stdout,
            url,
        })
    }
}
