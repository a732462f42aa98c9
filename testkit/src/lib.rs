//! What the test binaries of the workspace share: the test services and
//! their URLs, a namespace of a test's own and its queues deleted after it,
//! a server binary started and its address read, the tokens of test
//! buyers and organizers, and deadlines instead of sleeps.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use flashtix_server::identity::tokens::Claims;
use flashtix_server::identity::{self, Access, SigningKey};
use flashtix_server::runtime::config::Namespace;
use flashtix_server::saga::broker::{self, within, Topology};
use tokio::time::Instant;
use uuid::Uuid;

/// The test database (`FLASHTIX_TEST_DATABASE_URL`, or `flashtix_test` on
/// the local Postgres).
pub fn database_url() -> String {
    std::env::var("FLASHTIX_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/flashtix_test".into())
}

/// The test broker (`FLASHTIX_TEST_AMQP_URL`, or the local RabbitMQ).
pub fn amqp_url() -> String {
    std::env::var("FLASHTIX_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The test Redis (`FLASHTIX_TEST_REDIS_URL`, or the local one).
pub fn redis_url() -> String {
    std::env::var("FLASHTIX_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Creates the test database, once per test binary.
pub async fn ensure_database() {
    static READY: OnceLock<()> = OnceLock::new();
    if READY.get().is_none() {
        flashtix_server::runtime::db::create_database_if_missing(&database_url())
            .await
            .expect("Postgres must be reachable for the tests");
        let _ = READY.set(());
    }
}

/// A namespace no other test uses: `prefix` (one letter, `t` for the
/// server's tests, `c` for the CLI's, so CI can clear what a killed run
/// left) and a fresh UUIDv7.
pub fn namespace(prefix: char) -> Namespace {
    Namespace::parse(&format!("{prefix}{}", Uuid::now_v7().simple())).expect("namespace")
}

/// `command` pointed at the test services, in `namespace`.
pub fn on_test_services<'a>(command: &'a mut Command, namespace: &str) -> &'a mut Command {
    command
        .env("FLASHTIX_DATABASE_URL", database_url())
        .env("FLASHTIX_REDIS_URL", redis_url())
        .env("FLASHTIX_AMQP_URL", amqp_url())
        .env("FLASHTIX_NAMESPACE", namespace)
        .env("FLASHTIX_TOKEN_SECRET_FILE", token_secret_file())
}

/// The shared secret the tests' servers verify tokens with (HS256). A
/// test's own, never a sale's: it is in the source.
pub const TOKEN_SECRET: &[u8] = b"flashtix tests: a secret of more than 32 bytes";

/// A file holding [`TOKEN_SECRET`], for servers started as processes.
pub fn token_secret_file() -> &'static std::path::Path {
    static FILE: OnceLock<std::path::PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let file =
            std::env::temp_dir().join(format!("flashtix-test-secret-{}", std::process::id()));
        std::fs::write(&file, TOKEN_SECRET).expect("writing the test token secret");
        file
    })
}

/// A token of `subject` with `access`, valid for an hour.
pub fn token(subject: &str, access: Access) -> String {
    let claims = Claims::new(
        subject,
        access,
        Duration::from_secs(3600),
        identity::DEFAULT_AUDIENCE,
        identity::DEFAULT_ISSUER,
    );
    SigningKey::secret(TOKEN_SECRET).sign(&claims)
}

/// The verifier of the tokens [`token`] signs.
pub fn token_verifier() -> std::sync::Arc<identity::Verifier> {
    std::sync::Arc::new(identity::Verifier::with_secret(
        TOKEN_SECRET,
        identity::DEFAULT_AUDIENCE,
        identity::DEFAULT_ISSUER,
    ))
}

/// Starts a server process (`command`, which prints `flashtix listening on
/// ADDRESS` first) and returns it with its address.
pub fn start_server(command: &mut Command) -> (Child, String) {
    // TEST_SERVER_LOGS=DIR keeps each server's log there, for a failure's
    // post-mortem; otherwise it is dropped.
    let stderr = match std::env::var_os("TEST_SERVER_LOGS") {
        Some(dir) => {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("server-{}-{n}.log", std::process::id());
            Stdio::from(
                std::fs::File::create(std::path::Path::new(&dir).join(name)).expect("a log file"),
            )
        }
        None => Stdio::null(),
    };
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("the server starts");
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first_line)
        .expect("the server's first line");
    let address = first_line
        .trim()
        .strip_prefix("flashtix listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first_line:?}"))
        .to_owned();
    (child, address)
}

/// Deletes every queue of `namespace` on the test broker, each call bounded
/// in time (a broker that stops answering must not hang the test that is
/// ending). The broker is shared, and each quorum queue left behind keeps
/// some of its limited file handles.
pub async fn delete_queues(namespace: &str) -> anyhow::Result<()> {
    let topology = Topology::new(Namespace::parse(namespace)?);
    let connection = broker::connect(&amqp_url()).await?;
    let channel = within("opening a channel", connection.create_channel()).await?;
    let mut first_error = None;
    for queue in topology.queues() {
        let options = lapin::options::QueueDeleteOptions::default();
        let deleted = within(
            "deleting a queue",
            channel.queue_delete(queue.as_str().into(), options),
        );
        if let Err(error) = deleted.await {
            first_error.get_or_insert(error);
        }
    }
    let _ = within("closing", connection.close(200, "done".into())).await;
    first_error.map_or(Ok(()), Err)
}

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(50);

/// Polls `look` until it answers `Ok`, or panics once `limit` has passed with
/// its last `Err` (what it saw): a deadline instead of a sleep.
pub async fn eventually<T, F, Fut>(limit: Duration, mut look: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match look().await {
            Ok(value) => return value,
            Err(seen) => assert!(Instant::now() < deadline, "not within {limit:?}: {seen}"),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `count` (a `SELECT count(*) …`) finds none, or panics once
/// `limit` has passed, saying how many `what` were left.
pub async fn until_none(pool: &sqlx::PgPool, limit: Duration, count: &str, what: &str) {
    eventually(limit, || async {
        let left: i64 = sqlx::query_scalar(count)
            .fetch_one(pool)
            .await
            .map_err(|error| format!("counting {what}: {error}"))?;
        match left {
            0 => Ok(()),
            left => Err(format!("{left} {what}")),
        }
    })
    .await
}
