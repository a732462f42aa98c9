//! Postgres: the pool (every connection's `search_path` is the namespace's schema)
//! and the migrations, embedded in the binary and applied at start.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::runtime::config::Namespace;

/// Reads rows into a struct by column name, one column a field:
/// `from_row!(Stored { id, user_id })` is the `sqlx::FromRow` sqlx's derive
/// would write, without compiling sqlx's macros.
macro_rules! from_row {
    ($row:ident { $($field:ident),+ $(,)? }) => {
        impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for $row {
            fn from_row(row: &'r sqlx::postgres::PgRow) -> sqlx::Result<Self> {
                use sqlx::Row;
                Ok(Self {
                    $($field: row.try_get(stringify!($field))?),+
                })
            }
        }
    };
}
pub(crate) use from_row;

/// The files under `server/migrations`, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "sale", include_str!("../../migrations/0001_sale.sql")),
    (
        2,
        "payments",
        include_str!("../../migrations/0002_payments.sql"),
    ),
    (
        3,
        "stock returns",
        include_str!("../../migrations/0003_stock_returns.sql"),
    ),
    (
        4,
        "released holds",
        include_str!("../../migrations/0004_released_holds.sql"),
    ),
    (
        5,
        "payments once per order",
        include_str!("../../migrations/0005_payments_once_per_order.sql"),
    ),
    (
        6,
        "seating",
        include_str!("../../migrations/0006_seating.sql"),
    ),
    (
        7,
        "seat returns",
        include_str!("../../migrations/0007_seat_returns.sql"),
    ),
    (
        8,
        "timeline",
        include_str!("../../migrations/0008_timeline.sql"),
    ),
    (
        9,
        "organizers",
        include_str!("../../migrations/0009_organizers.sql"),
    ),
    (
        10,
        "stock versions",
        include_str!("../../migrations/0010_stock_versions.sql"),
    ),
    (
        11,
        "notices",
        include_str!("../../migrations/0011_notices.sql"),
    ),
];

/// What a pool's connections are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    General,
    /// The order writer's few statements, run thousands of times a second.
    OrderWriter,
    /// The saga roles' (relay, payments, orders): as few, and as hot.
    Saga,
}

impl Purpose {
    /// The connections' `application_name`, so `pg_stat_activity` tells a
    /// process's pools apart.
    fn application_name(self) -> &'static str {
        match self {
            Self::General => "flashtix",
            Self::OrderWriter => "flashtix-writer",
            Self::Saga => "flashtix-saga",
        }
    }
}

/// A pool whose connections all work inside the namespace's schema. Lazy: nothing
/// is dialled until first use, so a process can start while Postgres is down.
pub fn pool(
    database_url: &str,
    namespace: &Namespace,
    size: u32,
    purpose: Purpose,
) -> anyhow::Result<PgPool> {
    let mut settings = vec![
        ("search_path", namespace.as_str()),
        // Not "schema already exists, skipping" at every start.
        ("client_min_messages", "warning"),
    ];
    if purpose != Purpose::General {
        // sqlx prepares every statement and Postgres may keep a generic plan made
        // from the statistics of that moment. At the start of a sale the orders
        // table is empty, a sequential scan is the cheapest plan, and it stays
        // cached while the table grows: writer batches went from 2 to 17 ms
        // within seconds of a reset, and the saga workers scanned `orders`,
        // `payments` and the provider's ledger whole, hundreds of times in a
        // ten-second storm. Every hot statement has an index path; with
        // sequential scans priced out the planner takes it whatever the
        // statistics say, and the plan can stay cached.
        settings.push(("enable_seqscan", "off"));
        // A statement left with a sequential scan (a table with no index it
        // can use) is then priced past every JIT threshold, and compiling it
        // took 5 ms a call, 140 ms the first time on a connection.
        settings.push(("jit", "off"));
    }
    let options = PgConnectOptions::from_str(database_url)
        .context("invalid database URL")?
        .application_name(purpose.application_name())
        .options(settings);
    Ok(PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(5))
        // No ping before every checkout: the order writer checks out a connection
        // per batch, and a broken connection fails the batch's first statement
        // just as clearly.
        .test_before_acquire(false)
        .connect_lazy_with(options))
}

/// How long a process waits for another one migrating the same namespace.
const MIGRATION_LOCK_TIMEOUT: &str = "60s";

/// Creates the namespace's schema if needed and applies the pending migrations.
///
/// Safe to run from several processes at once: they queue on an advisory lock
/// of the namespace's own, taken inside the migration's transaction. sqlx's own
/// lock is not used: it is one per database (every namespace would queue
/// behind every other), it is held by the session, so a migration that fails
/// or is cancelled half-way leaves it taken on a pooled connection, and it
/// waits without limit.
pub async fn migrate(pool: &PgPool, namespace: &Namespace) -> anyhow::Result<()> {
    // The name is a validated identifier (see `Namespace`), so quoting it is enough.
    let create = format!("CREATE SCHEMA IF NOT EXISTS \"{namespace}\"");
    if let Err(first) = sqlx::query(&create).execute(pool).await {
        // Two processes creating the same schema race on the catalogue's unique
        // index; the loser's retry finds the schema there.
        sqlx::query(&create)
            .execute(pool)
            .await
            .with_context(|| format!("creating schema {namespace} (first try: {first})"))?;
    }
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT}'"
    ))
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('flashtix migrations ' || $1))")
        .bind(namespace.as_str())
        .execute(&mut *tx)
        .await
        .context("waiting for another process migrating this namespace")?;
    migrator()
        .run(&mut *tx)
        .await
        .context("applying migrations")?;
    tx.commit().await?;
    Ok(())
}

/// What a namespace's schema is, to a process that must not change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// No sale was ever made in it.
    Missing,
    /// Made by an older build: migrations up to this version only.
    Behind(i64),
    /// Made by a newer build: it has migrations this one does not know.
    Ahead(i64),
    Current,
}

/// Reads, without changing anything, whether the namespace holds a sale of
/// this build's schema (the migrations it has applied against those this
/// build carries).
pub async fn schema(pool: &PgPool, namespace: &Namespace) -> anyhow::Result<Schema> {
    let made: bool = sqlx::query_scalar(
        "SELECT to_regclass(format('%I._sqlx_migrations', $1::text)) IS NOT NULL",
    )
    .bind(namespace.as_str())
    .fetch_one(pool)
    .await
    .context("looking for the namespace's schema")?;
    let applied: Option<i64> = if made {
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .context("reading the namespace's migrations")?
    } else {
        None
    };
    let known = MIGRATIONS.iter().map(|&(version, _, _)| version).max();
    Ok(match (applied, known) {
        (None, _) => Schema::Missing,
        (Some(applied), Some(known)) if applied < known => Schema::Behind(applied),
        (Some(applied), Some(known)) if applied > known => Schema::Ahead(applied),
        _ => Schema::Current,
    })
}

fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        locking: false,
        ..Migrator::DEFAULT
    }
}

/// Creates the database `database_url` names if it does not exist, connecting
/// to the server's `postgres` database to do it.
pub async fn create_database_if_missing(database_url: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let options = PgConnectOptions::from_str(database_url).context("invalid database URL")?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = sqlx::PgConnection::connect_with(&options.database("postgres"))
        .await
        .context("connecting to Postgres")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if exists {
        return Ok(());
    }
    let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    if let Err(error) = sqlx::query(&create).execute(&mut admin).await {
        // Created meanwhile by someone else: fine.
        let code = error.as_database_error().and_then(|e| e.code());
        if !matches!(code.as_deref(), Some("42P04" | "23505")) {
            return Err(error).context(format!("creating database {name}"));
        }
    }
    Ok(())
}
