//! `flashtix demo`: a whole flash sale on this machine in under a minute — serve
//! every role in the background, reset, the flash-sale scenario at a smaller
//! size, settle, check, and the tables. Exits as `check` does.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use flashtix_chaos::process::{Process, Ready, Recipe};
use flashtix_server::runtime::config::ConnectionArgs;

use super::storm::{Scenario, StormArgs};
use super::{reset, Exit, Failure, Services};

/// How long the server may take to listen (it migrates and connects first).
const SERVER_START_LIMIT: Duration = Duration::from_secs(60);

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
    /// Tell every buyer by mail: a mail server of the demo's own delivers
    /// their notices to DIR/Maildir (the demo waits for the last one)
    #[arg(long, value_name = "DIR")]
    mail: Option<PathBuf>,
}

pub async fn run(args: DemoArgs) -> Exit {
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
    // A key pair of the demo's own: the sale verifies, the storm signs.
    let keys = Keys::make()?;
    let mail = match &args.mail {
        Some(dir) => Some(MailServer::start(dir).await?),
        None => None,
    };
    let smtp = mail.as_ref().map(|mail| mail.url.clone());
    let (server, url) = serve(&args.connections, &log, &keys.public_keys, smtp).await?;
    eprintln!(
        "demo: the sale serves at {url} (every role; its log: {})",
        log.display()
    );

    let resolved = args.connections.resolve().map_err(Failure::usage)?;
    let buyers = args.buyers.to_string();
    let storm: StormArgs = super::parse_flags::<StormArgs>(&[
        "--target",
        &url,
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
    .map_err(|error| Failure::usage(error.into()))?
    .signed_by(keys.signing_key.clone());
    let outcome = super::storm::run_scenario(storm, scenario).await;
    if let Some(mail) = &mail {
        mail.wait_for_every_notice(&args.connections).await?;
    }
    drop(server);
    if matches!(&outcome, Ok(code) if *code == ExitCode::SUCCESS) {
        let _ = std::fs::remove_file(&log);
    }
    outcome
}

/// The demo's mail server, delivering to a Maildir (stopped when dropped).
struct MailServer {
    _process: Process,
    url: String,
    maildir: PathBuf,
}

impl MailServer {
    async fn start(dir: &Path) -> Result<Self, Failure> {
        let receipts = flashtix_chaos::receivers::Receipts::new(dir);
        let port = flashtix_chaos::services::free_port().context("a port for the mail server")?;
        let recipe = receipts
            .mail_sink(port, Duration::ZERO)
            .context("writing the mail server's script")?;
        let mut process = Process::new("the mail server", recipe);
        let url = process.start().await.context(
            "starting the demo's mail server (it needs Python's aiosmtpd: \
             apt-get install python3-aiosmtpd)",
        )?;
        eprintln!(
            "demo: buyers are mailed through {url}, into {}",
            receipts.maildir().display()
        );
        Ok(Self {
            _process: process,
            url,
            maildir: receipts.maildir(),
        })
    }

    /// Waits, up to a minute, until every order that ended has its mail
    /// recorded sent, and says where they are.
    async fn wait_for_every_notice(&self, connections: &ConnectionArgs) -> Result<(), Failure> {
        let services = Services::connect(connections).await?;
        // Every ending: each order's own, and each refund.
        let unsent = "SELECT count(*) FROM (
                          SELECT id, status AS ending FROM orders WHERE status <> 'PENDING'
                          UNION ALL
                          SELECT order_id, 'REFUNDED' FROM payments WHERE kind = 'REFUND'
                      ) e
                      WHERE NOT EXISTS (SELECT 1 FROM notices n
                                        WHERE n.order_id = e.id AND n.ending = e.ending)";
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left: i64 = sqlx::query_scalar(unsent)
                .fetch_one(&services.pool)
                .await
                .context("counting the notices not sent")?;
            if left == 0 || tokio::time::Instant::now() > deadline {
                let mails = std::fs::read_dir(self.maildir.join("new")).map_or(0, |d| d.count());
                eprintln!(
                    "demo: {mails} mails in {} ({left} not sent); prove them with \
                     `flashtix check --namespace {} --mail {}`",
                    self.maildir.join("new").display(),
                    services.connections.namespace,
                    self.maildir.display()
                );
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The demo's key pair, in a folder of its own removed when dropped.
struct Keys {
    dir: PathBuf,
    signing_key: PathBuf,
    public_keys: PathBuf,
}

impl Keys {
    fn make() -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!("flashtix-demo-keys-{}", std::process::id()));
        // Its own, and nobody else's: made fresh, readable by us alone.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .context("a folder for the demo's keys")?;
        let made = super::keys::make_pair(&dir);
        let keys = |(signing_key, public_keys)| Self {
            dir: dir.clone(),
            signing_key,
            public_keys,
        };
        made.map(keys).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `flashtix serve --role all` as a child process (killed when dropped);
/// returns it and its URL.
async fn serve(
    connections: &ConnectionArgs,
    log: &Path,
    public_keys: &Path,
    smtp: Option<String>,
) -> Result<(Process, String), Failure> {
    let resolved = connections.resolve().map_err(Failure::usage)?;
    let mut env: Vec<(String, String)> = smtp
        .map(|url| ("FLASHTIX_SMTP".to_owned(), url))
        .into_iter()
        .collect();
    let mut server = Process::new(
        "the sale server",
        Recipe {
            program: std::env::current_exe().context("finding flashtix itself")?,
            args: ["serve", "--bind", "127.0.0.1:0", "--role", "all"]
                .map(String::from)
                .to_vec(),
            env: {
                env.extend([
                    ("FLASHTIX_DATABASE_URL".into(), resolved.database_url),
                    ("FLASHTIX_REDIS_URL".into(), resolved.redis_url),
                    ("FLASHTIX_AMQP_URL".into(), resolved.amqp_url),
                    (
                        "FLASHTIX_NAMESPACE".into(),
                        resolved.namespace.as_str().into(),
                    ),
                    (
                        "FLASHTIX_TOKEN_KEYS".into(),
                        public_keys.to_string_lossy().into_owned(),
                    ),
                ]);
                env
            },
            log: log.to_path_buf(),
            ready: Ready::Line("flashtix listening on ".into()),
            ready_within: SERVER_START_LIMIT,
            user: None,
        },
    );
    let url = server.start().await.context("starting `flashtix serve`")?;
    Ok((server, url))
}
