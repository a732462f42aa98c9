//! One module per command; each parses its flags into a validated plan, runs it,
//! and returns the exit code.

pub mod chaos;
pub mod check;
pub mod demo;
pub mod docs;
pub mod keys;
pub mod reset;
pub mod stock_stream;
pub mod storm;
pub mod up;
pub mod watch;

use std::process::ExitCode;

use anyhow::Context;
use flashtix_server::gate::Gate;
use flashtix_server::runtime::config::{ConnectionArgs, Connections};
use sqlx::PgPool;

/// Parses `flags` as if typed after a command whose arguments are `T`: how one
/// command runs another with flags of its own, and how defaults are read.
pub fn parse_flags<T: clap::Args + clap::FromArgMatches>(flags: &[&str]) -> Result<T, clap::Error> {
    let command = T::augment_args(clap::Command::new("flashtix").no_binary_name(true));
    T::from_arg_matches(&command.try_get_matches_from(flags)?)
}

/// Why a command could not finish, and so which exit code it ends with.
pub struct Failure {
    pub kind: FailureKind,
    pub error: anyhow::Error,
}

pub enum FailureKind {
    /// Bad flags or configuration: exit 2.
    Usage,
    /// Postgres, Redis or RabbitMQ did not answer: exit 4.
    Unreachable,
    /// Anything else: exit 1.
    Other,
}

impl Failure {
    pub fn usage(error: anyhow::Error) -> Self {
        Self {
            kind: FailureKind::Usage,
            error,
        }
    }

    pub fn unreachable(error: anyhow::Error) -> Self {
        Self {
            kind: FailureKind::Unreachable,
            error,
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self.kind {
            FailureKind::Usage => 2,
            FailureKind::Unreachable => 4,
            FailureKind::Other => 1,
        })
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self {
            kind: FailureKind::Other,
            error,
        }
    }
}

/// Connections to the sale's Postgres and Redis, checked to answer.
pub struct Services {
    pub connections: Connections,
    pub pool: PgPool,
    pub gate: Gate,
}

impl Services {
    pub async fn connect(args: &ConnectionArgs) -> Result<Self, Failure> {
        let connections = args.resolve().map_err(Failure::usage)?;
        let pool = flashtix_server::runtime::db::pool(
            &connections.database_url,
            &connections.namespace,
            4,
            flashtix_server::runtime::db::Purpose::General,
        )
        .map_err(Failure::usage)?;
        sqlx::query("SELECT 1")
            .execute(&pool)
            .await
            .with_context(|| unreachable("Postgres", &connections.database_url, "--database-url"))
            .map_err(Failure::unreachable)?;
        let gate = Gate::connect(&connections.redis_url, connections.namespace.clone())
            .context("invalid Redis URL")
            .map_err(Failure::usage)?;
        gate.ping()
            .await
            .with_context(|| unreachable("Redis", &connections.redis_url, "--redis-url"))
            .map_err(Failure::unreachable)?;
        Ok(Self {
            connections,
            pool,
            gate,
        })
    }
}

/// What to say when `service` does not answer at `url`, and what to do next.
pub fn unreachable(service: &str, url: &str, flag: &str) -> String {
    format!(
        "cannot reach {service} at {}: is it running? `flashtix up` starts Postgres, Redis \
         and RabbitMQ where they are missing; or point {flag} at yours",
        flashtix_server::runtime::config::address(url)
    )
}

/// How a command ended: the exit code it chose, or why it could not finish.
pub type Exit = Result<ExitCode, Failure>;
