//! Configuration: raw flags and environment (clap) in, one validated [`Settings`] out.
//!
//! The flag structs are shared by the `flashtix-server` binary and `flashtix serve`,
//! so both read the same flags and the same `FLASHTIX_*` variables.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use flashtix_model::Role;

use crate::identity::config::{Identity, IdentityArgs};
use crate::runtime::notify::{NoticeArgs, NoticeSettings};

/// Where the sale's services are, and which namespace of them is ours.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// PostgreSQL URL [env: FLASHTIX_DATABASE_URL, then DATABASE_URL]
    #[arg(long)]
    pub database_url: Option<String>,
    /// Redis URL
    #[arg(
        long,
        env = "FLASHTIX_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// RabbitMQ URL
    #[arg(
        long,
        env = "FLASHTIX_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Prefix of Redis keys and RabbitMQ names, and the Postgres schema, so several
    /// sales (and tests) can share one set of services.
    #[arg(long, env = "FLASHTIX_NAMESPACE", default_value = "flashtix")]
    pub namespace: String,
}

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The longest `--relay-ms`: an order's payment may reach the order worker two
/// pauses after it is taken, and holds can be a few seconds long.
const MAX_RELAY_MS: u64 = 10_000;

impl ConnectionArgs {
    pub fn resolve(&self) -> anyhow::Result<Connections> {
        let database_url = self
            .database_url
            .clone()
            .or_else(|| std::env::var("FLASHTIX_DATABASE_URL").ok())
            .or_else(|| std::env::var("DATABASE_URL").ok())
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        Ok(Connections {
            database_url,
            redis_url: self.redis_url.clone(),
            amqp_url: self.amqp_url.clone(),
            namespace: Namespace::parse(&self.namespace)?,
        })
    }
}

/// A `--role` value: one role by its name, or `all` of them in one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChoice {
    All,
    Only(Role),
}

impl RoleChoice {
    /// The roles it stands for.
    pub fn roles(self) -> Vec<Role> {
        match self {
            RoleChoice::All => Role::ALL.to_vec(),
            RoleChoice::Only(role) => vec![role],
        }
    }
}

impl clap::ValueEnum for RoleChoice {
    fn value_variants<'a>() -> &'a [Self] {
        static CHOICES: std::sync::OnceLock<Vec<RoleChoice>> = std::sync::OnceLock::new();
        CHOICES.get_or_init(|| {
            std::iter::once(RoleChoice::All)
                .chain(Role::ALL.map(RoleChoice::Only))
                .collect()
        })
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            RoleChoice::All => PossibleValue::new("all").help("Every role in one process"),
            RoleChoice::Only(role) => PossibleValue::new(role.name()).help(role.duty()),
        })
    }
}

/// Flags of a server process.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub connections: ConnectionArgs,
    /// Address to listen on (port 0 picks a free port)
    #[arg(long, env = "FLASHTIX_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Roles to run, comma separated
    #[arg(
        long,
        env = "FLASHTIX_ROLE",
        value_delimiter = ',',
        default_value = "all"
    )]
    pub role: Vec<RoleChoice>,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub notices: NoticeArgs,
    /// How often the reconciler repairs Redis from Postgres, in milliseconds (0: never)
    #[arg(long, env = "FLASHTIX_RECONCILE_MS", default_value_t = 1000)]
    pub reconcile_ms: u64,
    /// Postgres connections of the general pool (the order writer opens up to
    /// 4 more, the saga roles up to 4 between them)
    #[arg(long, env = "FLASHTIX_DB_POOL", default_value_t = 16)]
    pub db_pool: u32,
    /// How often the sweeper looks for expired orders, in milliseconds
    #[arg(long, env = "FLASHTIX_SWEEP_MS", default_value_t = 1000)]
    pub sweep_ms: u64,
    /// The live stock stream's messages a second, at most, per event: each
    /// tick reads the stock of every watched event in one query and tells
    /// what changed (1 to 100)
    #[arg(long, env = "FLASHTIX_STREAM_RATE", default_value_t = 10)]
    pub stream_rate: u32,
    /// The most messages a second this process sends to stream clients in
    /// all: with more clients than the rate allows, every event is told
    /// less often, so watchers never starve the sale (0: no limit)
    #[arg(long, env = "FLASHTIX_STREAM_BUDGET", default_value_t = 10_000)]
    pub stream_budget: u32,
    /// How long the outbox relay lets messages gather between passes, in
    /// milliseconds: longer makes fewer, larger messages, each up to this much later
    #[arg(long, env = "FLASHTIX_RELAY_MS", default_value_t = 200)]
    pub relay_ms: u64,
    /// Share of payments the simulated provider declines (0.0 to 1.0)
    #[arg(long, env = "FLASHTIX_PAYMENT_FAILURE_RATE", default_value_t = 0.0)]
    pub payment_failure_rate: f64,
    /// Time each call to the simulated provider takes, in milliseconds
    #[arg(long, env = "FLASHTIX_PAYMENT_LATENCY_MS", default_value_t = 0)]
    pub payment_latency_ms: u64,
    /// Share of provider calls whose answer is lost (the work is done) (0.0 to 1.0)
    #[arg(long, env = "FLASHTIX_PAYMENT_TIMEOUT_RATE", default_value_t = 0.0)]
    pub payment_timeout_rate: f64,
    /// Seed of the simulated provider's decisions
    #[arg(long, env = "FLASHTIX_PAYMENT_SEED", default_value_t = 0)]
    pub payment_seed: u64,
}

impl ServerArgs {
    pub fn resolve(&self) -> anyhow::Result<Settings> {
        let roles: Vec<Role> = self.role.iter().flat_map(|choice| choice.roles()).collect();
        let identity = self.identity.resolve(roles.contains(&Role::Api))?;
        if self.db_pool == 0 {
            bail!("--db-pool must be at least 1");
        }
        if self.sweep_ms == 0 {
            bail!("--sweep-ms must be at least 1");
        }
        if !(1..=MAX_RELAY_MS).contains(&self.relay_ms) {
            bail!(
                "--relay-ms must be between 1 and {MAX_RELAY_MS} (a message waits up to this long \
                 at each of the saga's two hops), got {}",
                self.relay_ms
            );
        }
        if !(1..=MAX_STREAM_RATE).contains(&self.stream_rate) {
            bail!(
                "--stream-rate must be between 1 and {MAX_STREAM_RATE} messages a second, got {}",
                self.stream_rate
            );
        }
        for (flag, rate) in [
            ("--payment-failure-rate", self.payment_failure_rate),
            ("--payment-timeout-rate", self.payment_timeout_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                bail!("{flag} must be between 0 and 1, got {rate}");
            }
        }
        Ok(Settings {
            connections: self.connections.resolve()?,
            bind: self.bind,
            roles,
            identity,
            reconcile_every: (self.reconcile_ms > 0)
                .then(|| Duration::from_millis(self.reconcile_ms)),
            db_pool: self.db_pool,
            sweep_every: Duration::from_millis(self.sweep_ms),
            relay_every: Duration::from_millis(self.relay_ms),
            lane_idle: LANE_IDLE,
            stream: StreamPace {
                every: Duration::from_secs(1) / self.stream_rate,
                budget: (self.stream_budget > 0).then_some(self.stream_budget),
            },
            provider: ProviderSettings {
                failure_rate: self.payment_failure_rate,
                latency: Duration::from_millis(self.payment_latency_ms),
                timeout_rate: self.payment_timeout_rate,
                seed: self.payment_seed,
            },
            notices: self.notices.resolve()?,
        })
    }
}

/// Validated connection settings.
#[derive(Debug, Clone)]
pub struct Connections {
    pub database_url: String,
    pub redis_url: String,
    pub amqp_url: String,
    pub namespace: Namespace,
}

/// Where a service's URL points, `host:port`, without its user or password:
/// for messages a person reads (a URL may carry a secret).
pub fn address(url: &str) -> &str {
    let Some((_, rest)) = url.split_once("://") else {
        return "(an address given in another form)";
    };
    // After the last `@` first: a password may hold `/` or `?` unencoded.
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    host.split(['/', '?', '#']).next().unwrap_or(host)
}

/// Validated server settings; the rest of the code trusts them.
#[derive(Debug, Clone)]
pub struct Settings {
    pub connections: Connections,
    pub bind: SocketAddr,
    pub roles: Vec<Role>,
    /// How buyers and organizers are known (tokens), and the buyers' rate.
    pub identity: Identity,
    /// `None`: the reconciler does not run (tests that need drift to stay visible).
    pub reconcile_every: Option<Duration>,
    pub db_pool: u32,
    pub sweep_every: Duration,
    /// The outbox relay's pause after a pass that claimed less than a full
    /// batch.
    pub relay_every: Duration,
    /// How long an event's order writer lane waits for a reservation before
    /// it ends (the next one starts another).
    pub lane_idle: Duration,
    /// How often the live stock stream may tell each event's changes.
    pub stream: StreamPace,
    /// How the simulated payment provider behaves.
    pub provider: ProviderSettings,
    /// Where the notifications role sends buyers' and organizers' notices.
    pub notices: NoticeSettings,
}

/// How often the live stock stream tells an event's changes.
#[derive(Debug, Clone, Copy)]
pub struct StreamPace {
    /// Its tick: at most one message an event each.
    pub every: Duration,
    /// The most messages a second to all clients of the process; `None`:
    /// no limit.
    pub budget: Option<u32>,
}

/// The most messages a second the stock stream may send per event.
const MAX_STREAM_RATE: u32 = 100;

/// How long an order writer lane stays with nothing to write: a quiet minute.
pub const LANE_IDLE: Duration = Duration::from_secs(60);

impl Settings {
    pub fn runs(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// A namespace: lower-case letters, digits and `_`, starting with a letter, at most
/// 40 long, so it is safe as a Postgres schema name and inside Redis key patterns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(String);

impl Namespace {
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let mut chars = raw.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !starts_with_letter || !rest_ok || raw.len() > 40 {
            bail!(
                "invalid namespace {raw:?}: use 1-40 lower-case letters, digits or '_', starting with a letter"
            );
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a database URL points at this machine (reset asks for `--yes` otherwise).
pub fn database_is_local(database_url: &str) -> anyhow::Result<bool> {
    use std::str::FromStr;
    let options =
        sqlx::postgres::PgConnectOptions::from_str(database_url).context("invalid database URL")?;
    let host = options.get_host();
    Ok(host.starts_with('/') || matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]"))
}

/// How the simulated payment provider behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProviderSettings {
    /// Share of captures that are declined, 0.0 to 1.0.
    pub failure_rate: f64,
    /// Time each call takes.
    pub latency: Duration,
    /// Share of calls whose answer is lost (the work is still done), 0.0 to 1.0.
    pub timeout_rate: f64,
    pub seed: u64,
}

impl Default for ProviderSettings {
    fn default() -> Self {
        Self {
            failure_rate: 0.0,
            latency: Duration::ZERO,
            timeout_rate: 0.0,
            seed: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_never_shows_credentials() {
        for (url, shown) in [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "127.0.0.1:5432",
            ),
            (
                "postgres://u:s3cret@db.example:6432/sale?sslmode=require",
                "db.example:6432",
            ),
            ("amqp://guest:p@ss@rabbit:5672/%2f", "rabbit:5672"),
            ("redis://127.0.0.1:6379", "127.0.0.1:6379"),
            ("redis://:pw@cache#frag", "cache"),
            ("postgres://u:12/34?5@db:5432/sale", "db:5432"),
        ] {
            assert_eq!(address(url), shown, "{url}");
        }
        assert!(!address("host=db password=s3cret").contains("s3cret"));
    }

    #[test]
    fn namespaces_are_safe_identifiers() {
        assert!(Namespace::parse("flashtix").is_ok());
        assert!(Namespace::parse("t_1a").is_ok());
        for bad in ["", "1abc", "Flash", "a-b", "a:b", "a*", &"a".repeat(41)] {
            assert!(Namespace::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn the_relay_pause_is_between_1_ms_and_10_s() {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            server: ServerArgs,
        }
        let parse = |ms: &str| {
            <Flags as clap::Parser>::try_parse_from([
                "flashtix-server",
                "--role",
                "relay",
                "--relay-ms",
                ms,
            ])
            .expect("flags parse")
            .server
            .resolve()
        };
        assert_eq!(
            parse("250").expect("in range").relay_every,
            Duration::from_millis(250)
        );
        for refused in ["0", "10001"] {
            let error = parse(refused).expect_err(refused).to_string();
            assert!(
                error.contains("--relay-ms must be between 1 and 10000"),
                "{error}"
            );
        }
    }

    #[test]
    fn local_databases_are_recognised() {
        assert!(database_is_local("postgres://u@127.0.0.1:5432/db").unwrap());
        assert!(database_is_local("postgres://u@localhost/db").unwrap());
        assert!(!database_is_local("postgres://u@db.example.com/db").unwrap());
    }
}
