//! What the CLI's end-to-end tests share: a sale of their own (namespace and
//! temp dir) and the `flashtix` binary run against the test services.

#![allow(dead_code)] // each test file uses its own part

use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::sync::Arc;

use serde_json::Value;
use sqlx::PgPool;

pub use flashtix_testkit::redis_url as test_redis_url;
pub use flashtix_testkit::{amqp_url as test_amqp_url, database_url as test_database_url};

#[derive(Clone)]
pub struct Sale {
    pub namespace: String,
    pub dir: PathBuf,
    _queues: Arc<Queues>,
}

/// The sale's RabbitMQ queues, deleted when the last copy of the sale goes.
/// The broker is shared, and each quorum queue left behind keeps file
/// handles of a broker that has a limited number: enough of them and it
/// stops taking connections.
struct Queues {
    namespace: String,
}

impl Drop for Queues {
    fn drop(&mut self) {
        let namespace = self.namespace.clone();
        // A runtime of its own: the test's may be shutting down.
        let deleted = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(flashtix_testkit::delete_queues(&namespace))
        })
        .join();
        if let Ok(Err(error)) = deleted {
            eprintln!("could not delete the sale's queues: {error:#}");
        }
    }
}

impl Sale {
    pub async fn new() -> Self {
        flashtix_testkit::ensure_database().await;
        let namespace = flashtix_testkit::namespace('c').as_str().to_owned();
        let dir = std::env::temp_dir().join(&namespace);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let queues = Arc::new(Queues {
            namespace: namespace.clone(),
        });
        Self {
            namespace,
            dir,
            _queues: queues,
        }
    }

    /// Runs `flashtix` with this sale's connections and nothing from the
    /// environment of the test runner.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_flashtix"))
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("FLASHTIX_DATABASE_URL")
            .env("FLASHTIX_REDIS_URL", test_redis_url())
            .env("FLASHTIX_AMQP_URL", test_amqp_url())
            .env("FLASHTIX_NAMESPACE", &self.namespace)
            .env(
                "FLASHTIX_TOKEN_SECRET_FILE",
                flashtix_testkit::token_secret_file(),
            )
            .env("DATABASE_URL", test_database_url())
            .output()
            .expect("flashtix runs")
    }

    /// Runs `flashtix` off the async runtime (so servers in the test keep
    /// answering while it runs).
    pub async fn run_in_background(&self, args: &[&str]) -> Output {
        let sale = self.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            sale.run(&args)
        })
        .await
        .expect("flashtix ran")
    }

    /// `flashtix serve` with `roles` on a free port, against the test services.
    pub fn serve(&self, roles: &str) -> Server {
        self.serve_with(roles, &[], None)
    }

    /// `flashtix serve` with `roles` and `flags`, making the server's known
    /// mistakes `bugs` (comma separated) if any.
    pub fn serve_with(&self, roles: &str, flags: &[&str], bugs: Option<&str>) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flashtix"));
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--role", roles])
            .args(flags)
            .env_remove("FLASHTIX_KNOWN_BAD")
            .envs(bugs.map(|bugs| ("FLASHTIX_KNOWN_BAD", bugs)));
        flashtix_testkit::on_test_services(&mut command, &self.namespace);
        let (child, address) = flashtix_testkit::start_server(&mut command);
        Server {
            child,
            url: address,
        }
    }

    pub fn json(&self, name: &str) -> (String, Value) {
        let path = self.dir.join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        (
            path.display().to_string(),
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    /// `flashtix reset` with `flags`, which must succeed; returns the seeded
    /// events (from `--json`) and what it printed.
    pub fn reset(&self, flags: &[&str]) -> (Vec<Value>, String) {
        let (events_file, _) = self.json("events.json");
        let mut args = vec!["reset", "--json", &events_file];
        args.extend_from_slice(flags);
        let reset = self.run(&args);
        assert_eq!(reset.status.code(), Some(0), "{}", stderr(&reset));
        let events = self
            .json("events.json")
            .1
            .as_array()
            .cloned()
            .expect("a list of events");
        (events, stdout(&reset))
    }

    pub async fn pool(&self) -> PgPool {
        flashtix_server::runtime::db::pool(
            &test_database_url(),
            &flashtix_server::runtime::config::Namespace::parse(&self.namespace).unwrap(),
            2,
            flashtix_server::runtime::db::Purpose::General,
        )
        .unwrap()
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the exit code, showing everything the run printed when it differs.
pub fn assert_exit(run: &Output, code: i32) {
    assert_eq!(
        run.status.code(),
        Some(code),
        "{}{}",
        stdout(run),
        stderr(run)
    );
}

/// Asserts a storm (or demo) ended with every invariant held: exit 0 and PASS.
pub fn assert_all_held(run: &Output) {
    assert_exit(run, 0);
    assert!(
        stdout(run).contains("PASS: every invariant held"),
        "{}",
        stdout(run)
    );
}

/// A `flashtix serve` process, stopped when dropped.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    /// SIGKILL, as a crash would: nothing is finished or flushed.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the JSON the CLI writes is described to its readers.
const SCHEMAS: [&str; 3] = ["check", "chaos", "storm"];
const SCHEMA_BASE: &str = "https://flashtix.invalid/schemas/";

/// What is wrong with `document` as `docs/schemas/{name}.schema.json`
/// describes it (empty: it is as described). The schemas refer to each
/// other by `$id`; none is fetched.
pub fn schema_errors(name: &str, document: &Value) -> Vec<String> {
    let read = |name: &str| -> Value {
        let path = format!(
            "{}/../docs/schemas/{name}.schema.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the schema"))
            .expect("a schema is JSON")
    };
    let mut registry = jsonschema::Registry::new();
    for other in SCHEMAS {
        registry = registry
            .add(format!("{SCHEMA_BASE}{other}.schema.json"), read(other))
            .expect("a valid URI");
    }
    let registry = registry.prepare().expect("the schemas resolve");
    let validator = jsonschema::options()
        .with_registry(&registry)
        .build(&read(name))
        .expect("a valid schema");
    validator
        .iter_errors(document)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect()
}

/// Fails the test unless `document` is as its schema describes.
pub fn assert_schema(name: &str, document: &Value) {
    let errors = schema_errors(name, document);
    assert!(
        errors.is_empty(),
        "not as docs/schemas/{name}.schema.json says: {errors:#?}"
    );
}

/// A buyer's token for `subject`, as the test servers verify them.
pub fn buyer_token(subject: &str) -> String {
    flashtix_testkit::token(subject, flashtix_server::identity::Access::Buyer)
}

/// The notices' receivers of a test sale: a mail server delivering to a
/// Maildir and a webhook receiver, under the sale's directory, stopped when
/// dropped.
pub struct Receivers {
    pub receipts: flashtix_chaos::receivers::Receipts,
    pub mail: flashtix_chaos::process::Process,
    pub hooks: flashtix_chaos::process::Process,
    /// `smtp://127.0.0.1:PORT`
    pub smtp: String,
    /// Where organizers' deliveries go.
    pub hook_url: String,
    pub secret: PathBuf,
}

impl Receivers {
    /// Starts both; the mail server holds each message `delay`.
    pub async fn start(sale: &Sale, delay: std::time::Duration) -> Self {
        use flashtix_chaos::process::Process;
        use flashtix_chaos::services::free_port;
        let receipts = flashtix_chaos::receivers::Receipts::new(sale.dir.join("receipts"));
        let secret = receipts.ensure_secret().expect("a webhook secret");
        let mail_recipe = receipts
            .mail_sink(free_port().unwrap(), delay)
            .expect("the mail server's recipe");
        let mut mail = Process::new("mail", mail_recipe);
        let smtp = mail.start().await.expect("the mail server starts");
        let hook_recipe = receipts
            .webhook_receiver(free_port().unwrap())
            .expect("the webhook receiver's recipe");
        let mut hooks = Process::new("webhooks", hook_recipe);
        let hook_url = format!(
            "{}/hooks",
            hooks.start().await.expect("the receiver starts")
        );
        Self {
            receipts,
            mail,
            hooks,
            smtp,
            hook_url,
            secret,
        }
    }

    /// The flags of a notifications process sending to these receivers.
    pub fn serve_flags(&self) -> Vec<String> {
        vec![
            "--smtp".into(),
            self.smtp.clone(),
            "--webhook-secret-file".into(),
            self.secret.display().to_string(),
            "--webhook-backoff-ms".into(),
            "100".into(),
        ]
    }

    /// The flags of a `check` that reads these receivers.
    pub fn check_flags(&self) -> Vec<String> {
        vec![
            "--mail".into(),
            self.receipts.maildir().display().to_string(),
            "--smtp".into(),
            self.smtp.clone(),
            "--webhooks".into(),
            self.receipts.webhook_record().display().to_string(),
            "--webhook-secret-file".into(),
            self.secret.display().to_string(),
        ]
    }

    /// The mail files delivered so far.
    pub fn mails(&self) -> Vec<PathBuf> {
        let new = self.receipts.maildir().join("new");
        let mut files: Vec<PathBuf> = std::fs::read_dir(new)
            .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }
}
