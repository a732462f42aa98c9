//! The `flashtix` binary end to end: exit codes, tables, JSON, and `check`
//! catching a corrupted sale. Each test has its own namespace (Postgres schema
//! and Redis prefix) in the test database.

use crate::common::{assert_all_held, assert_exit, assert_schema, stderr, stdout, Sale};
use flashtix_server::invariants::{Invariant, Report, Verdict};
use uuid::Uuid;

#[tokio::test]
async fn reset_seeds_events_and_check_passes() {
    let sale = Sale::new().await;

    let (events, printed) = sale.reset(&["--events", "2", "--tickets", "50"]);

    assert!(printed.contains("Flash sale #2"), "{printed}");
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e["available_tickets"] == 50));

    let (report_file, _) = sale.json("report.json");
    let check = sale.run(&["check", "--json", &report_file]);
    assert_all_held(&check);
    let (_, report) = sale.json("report.json");
    assert_eq!(report["verdict"], "PASS");
    crate::common::assert_schema("check", &report);
    let mut unheard_of = report.clone();
    unheard_of["findings"][0]["verdict"] = serde_json::json!("MAYBE");
    assert!(
        !crate::common::schema_errors("check", &unheard_of).is_empty(),
        "the schema knows the verdicts"
    );
}

#[tokio::test]
async fn json_to_stdout_leaves_the_tables_to_stderr() {
    let sale = Sale::new().await;
    let reset = sale.run(&["reset", "--tickets", "7", "--json", "-"]);
    assert_exit(&reset, 0);
    let events: serde_json::Value =
        serde_json::from_slice(&reset.stdout).expect("stdout is the events, as JSON");
    assert_eq!(events[0]["total_tickets"], 7);
    assert!(stderr(&reset).contains("Flash sale"), "{}", stderr(&reset));

    let check = sale.run(&["check", "--json", "-"]);
    assert_exit(&check, 0);
    let report: serde_json::Value =
        serde_json::from_slice(&check.stdout).expect("stdout is the report, as JSON");
    assert_eq!(report["verdict"], "PASS");
    assert!(
        stderr(&check).contains("PASS: every invariant held"),
        "{}",
        stderr(&check)
    );
}

#[tokio::test]
async fn check_names_what_a_corrupted_sale_broke() {
    let sale = Sale::new().await;
    let (events, _) = sale.reset(&["--tickets", "10", "--max-per-user", "2"]);
    let event_id = events[0]["id"].as_i64().expect("event id");

    // An order that took no stock, above the per-user limit; and a ticket moved
    // from available to pending with no order for it. (Losing or making a
    // ticket, the table's own CHECK refuses: see the next test.)
    let pool = sale.pool().await;
    let intruder = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO orders (id, event_id, user_id, idempotency_key, fingerprint, quantity,
                             amount_cents, expires_at)
         VALUES ($1, $2, 'intruder', 'forged', 'x', 3, 0, now() + interval '1 hour')",
    )
    .bind(intruder)
    .bind(event_id)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE events SET available_tickets = available_tickets - 1,
                           pending_tickets = pending_tickets + 1 WHERE id = $1",
    )
    .bind(event_id)
    .execute(&pool)
    .await
    .unwrap();

    let (report_file, _) = sale.json("report.json");
    let check = sale.run(&["check", "--json", &report_file]);

    assert_eq!(check.status.code(), Some(1), "{}", stdout(&check));
    let table = stdout(&check);
    assert!(table.contains("FAIL: an invariant was broken"), "{table}");
    assert!(
        table.contains(&format!(
            "event {event_id}: available 9 + pending 3 + sold 0 = 12"
        )),
        "{table}"
    );
    let (_, report) = sale.json("report.json");
    let report: Report = serde_json::from_value(report).unwrap();
    let verdict = |invariant| report.finding(invariant).unwrap().verdict;
    assert_eq!(verdict(Invariant::NoOversell), Verdict::Fail);
    let over_limit = report.finding(Invariant::PerUserLimit).unwrap();
    assert_eq!(over_limit.verdict, Verdict::Fail);
    assert!(over_limit.examples[0].contains(&intruder.to_string()));
    assert_eq!(verdict(Invariant::NoDuplicateOrder), Verdict::Pass);
    assert_eq!(
        verdict(Invariant::RedisAgrees),
        Verdict::Fail,
        "Redis still says 10"
    );
}

#[tokio::test]
async fn postgres_refuses_to_lose_or_make_a_ticket() {
    let sale = Sale::new().await;
    let (events, _) = sale.reset(&["--tickets", "10"]);
    let event_id = events[0]["id"].as_i64().expect("event id");
    let pool = sale.pool().await;

    for corruption in [
        "UPDATE events SET available_tickets = available_tickets - 1 WHERE id = $1",
        "UPDATE events SET sold_tickets = sold_tickets + 1 WHERE id = $1",
        "UPDATE events SET available_tickets = -1, pending_tickets = 11 WHERE id = $1",
    ] {
        let refused = sqlx::query(corruption).bind(event_id).execute(&pool).await;
        assert!(refused.is_err(), "{corruption} must be refused");
    }
}

#[tokio::test]
async fn reset_purges_the_namespace_queues() {
    use flashtix_server::saga::broker::{self, Topology};
    use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::FieldTable;

    let sale = Sale::new().await;
    sale.reset(&[]);
    let topology =
        Topology::new(flashtix_server::runtime::config::Namespace::parse(&sale.namespace).unwrap());
    let queue = topology.queue("order.created");
    let amqp_url = std::env::var("FLASHTIX_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let connection = broker::connect(&amqp_url).await.expect("RabbitMQ");
    let channel = connection.create_channel().await.unwrap();
    // Confirmed publishes are in the queue before the count is read.
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let depth = |channel: lapin::Channel, queue: String| async move {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await
            .unwrap()
            .message_count()
    };
    for _ in 0..3 {
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                b"{}",
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    assert_eq!(depth(channel.clone(), queue.clone()).await, 3);

    sale.reset(&[]);

    assert_eq!(depth(channel.clone(), queue.clone()).await, 0);
    for queue in topology.queues() {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}

#[tokio::test]
async fn reset_asks_before_wiping_a_remote_database() {
    let sale = Sale::new().await;
    let output = sale.run(&[
        "reset",
        "--database-url",
        "postgres://u@db.example.invalid/sale",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--yes"), "{}", stderr(&output));
}

#[tokio::test]
async fn bad_flags_exit_2_and_unreachable_services_exit_4() {
    let sale = Sale::new().await;
    let bad_namespace = sale.run(&["check", "--namespace", "Not-Valid"]);
    assert_eq!(bad_namespace.status.code(), Some(2));
    assert!(stderr(&bad_namespace).contains("invalid namespace"));
    let bad_tickets = sale.run(&["reset", "--tickets", "0"]);
    assert_eq!(bad_tickets.status.code(), Some(2));
    assert!(
        stderr(&bad_tickets).contains("total_tickets"),
        "{}",
        stderr(&bad_tickets)
    );

    // Each says where it looked (never with the password) and what to do.
    let unreachable = sale.run(&[
        "check",
        "--database-url",
        "postgres://postgres:s3cret@127.0.0.1:1/none",
    ]);
    assert_eq!(unreachable.status.code(), Some(4));
    let said = stderr(&unreachable);
    assert!(
        said.contains("cannot reach Postgres at 127.0.0.1:1: is it running? `flashtix up`"),
        "{said}"
    );
    assert!(!said.contains("s3cret"), "{said}");
    let no_redis = sale.run(&["check", "--redis-url", "redis://:s3cret@127.0.0.1:1"]);
    assert_eq!(no_redis.status.code(), Some(4));
    let said = stderr(&no_redis);
    assert!(said.contains("cannot reach Redis at 127.0.0.1:1"), "{said}");
    assert!(!said.contains("s3cret"), "{said}");
    let no_broker = sale.run(&["reset", "--amqp-url", "amqp://guest:s3cret@127.0.0.1:1/%2f"]);
    assert_eq!(no_broker.status.code(), Some(4));
    let said = stderr(&no_broker);
    assert!(
        said.contains("cannot reach RabbitMQ at 127.0.0.1:1"),
        "{said}"
    );
    assert!(!said.contains("s3cret"), "{said}");
    let no_sale = sale.run(&[
        "storm",
        "--target",
        "http://127.0.0.1:1",
        "--event",
        "1",
        "--buyers",
        "1",
        "--no-check",
    ]);
    assert_eq!(no_sale.status.code(), Some(4));
    let said = stderr(&no_sale);
    assert!(
        said.contains("nothing answers at http://127.0.0.1:1: is the sale running?"),
        "{said}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap().to_string();
    let second_server = sale.run(&["serve", "--bind", &bind, "--role", "api"]);
    assert_eq!(second_server.status.code(), Some(4));
    let said = stderr(&second_server);
    assert!(
        said.contains(&format!(
            "listening on {bind} (--bind): is another server there, an earlier `flashtix serve`?"
        )),
        "{said}"
    );
}

/// `flashtix up --driver docker` with a stand-in `docker` first on the PATH:
/// a shell script that answers each Docker command as told.
fn up_with_docker(sale: &Sale, script: &str, flags: &[&str]) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt;
    let bin = sale.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let docker = bin.join("docker");
    std::fs::write(&docker, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let compose_file = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    std::process::Command::new(env!("CARGO_BIN_EXE_flashtix"))
        .args(["up", "--driver", "docker", "--compose-file", compose_file])
        .args(flags)
        .env("PATH", path)
        .output()
        .expect("flashtix runs")
}

#[tokio::test]
async fn up_with_docker_says_what_to_do_when_docker_cannot() {
    let sale = Sale::new().await;
    let no_engine = up_with_docker(
        &sale,
        "echo 'Cannot connect to the Docker daemon' >&2; exit 1",
        &[],
    );
    assert_eq!(no_engine.status.code(), Some(4));
    let said = stderr(&no_engine);
    assert!(
        said.contains("no Docker engine answers") && said.contains("--driver local"),
        "{said}"
    );

    // An engine, Compose v2, and no registry: the pull fails as Docker says.
    let no_registry = r#"case "$1 $2" in
  "info "*|"compose version") exit 0 ;;
esac
echo 'Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: no such host' >&2
exit 1"#;
    let pull = up_with_docker(&sale, no_registry, &[]);
    assert_eq!(pull.status.code(), Some(4));
    let said = stderr(&pull);
    assert!(
        said.contains("registry-1.docker.io"),
        "Docker's own words: {said}"
    );
    let next = "build the images on this machine with `scripts/offline-images` (as root, with \
                dockerd running) and use them with `--env-file docker/offline.env`";
    assert!(said.contains(next), "{said}");
    // The offline images named but not built: Docker looks for them in a registry.
    let not_built = r#"case "$1 $2" in "info "*|"compose version") exit 0 ;; esac
echo 'Pulling postgres (flashtix/postgres:offline)...' >&2
echo 'pull access denied for flashtix/postgres, repository does not exist' >&2; exit 1"#;
    let offline = up_with_docker(&sale, not_built, &["--env-file", "docker/offline.env"]);
    let said = stderr(&offline);
    assert!(said.contains(next), "{said}");

    // Any other failure is Docker's alone.
    let other = up_with_docker(
        &sale,
        r#"case "$1 $2" in "info "*|"compose version") exit 0 ;; esac
for image in postgres redis rabbitmq nginx prometheus flashtix; do
  echo " $image Pulled" >&2
done
echo 'Bind for 127.0.0.1:55432 failed: port is already allocated' >&2; exit 1"#,
        &[],
    );
    let said = stderr(&other);
    assert!(said.contains("port is already allocated"), "{said}");
    assert!(!said.contains("offline-images"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_a_whole_flash_sale_and_proves_it() {
    let sale = Sale::new().await;

    let run = sale
        .run_in_background(&[
            "demo",
            "--tickets",
            "100",
            "--buyers",
            "2000",
            "--spike",
            "1s",
        ])
        .await;

    assert_all_held(&run);
    let (sold, available): (i64, i32) = sqlx::query_as(
        "SELECT (SELECT coalesce(sum(quantity), 0) FROM orders WHERE status = 'CONFIRMED'),
                (SELECT available_tickets FROM events)",
    )
    .fetch_one(&sale.pool().await)
    .await
    .expect("the demo's sale, in this test's namespace");
    assert_eq!(
        (sold, available),
        (100, 0),
        "every ticket sold and paid for"
    );
}

#[tokio::test]
async fn reset_seeds_a_seated_sale_from_a_spec_or_a_plan_file() {
    let sale = Sale::new().await;

    let (events, _) = sale.reset(&["--seating", "A:2x3@9000,GA:4@3000"]);
    assert_eq!(events[0]["total_tickets"], 6 + 4);
    let pool = sale.pool().await;
    let seats: Vec<String> = sqlx::query_scalar("SELECT seat_id FROM seats ORDER BY seat_id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        seats,
        ["A-1-1", "A-1-2", "A-1-3", "A-2-1", "A-2-2", "A-2-3"]
    );

    let (plan, _) = sale.json("plan.toml");
    std::fs::write(
        &plan,
        r#"
[[zones]]
name = "B"
price_cents = 5000
rows = [2, 3]
blocked = ["B-2-3"]

[[zones]]
name = "FLOOR"
price_cents = 2000
capacity = 10
"#,
    )
    .unwrap();
    let (events, _) = sale.reset(&["--seating", &plan]);
    assert_eq!(
        events[0]["total_tickets"],
        4 + 10,
        "the blocked seat is not for sale"
    );
    assert_eq!(
        events[0]["price_cents"], 2000,
        "the event shows its cheapest price"
    );
    let blocked: Vec<String> = sqlx::query_scalar("SELECT seat_id FROM seats WHERE blocked")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(blocked, ["B-2-3"]);
    assert_all_held(&sale.run(&["check"]));

    let bad = sale.run(&["reset", "--seating", "A:10x0@100"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("seats_per_row must be between 1 and 1000"),
        "{}",
        stderr(&bad)
    );
}

#[tokio::test]
async fn completions_and_manual_pages_are_made_from_the_commands() {
    let sale = Sale::new().await;
    let bash = sale.run(&["completions", "bash"]);
    assert_exit(&bash, 0);
    let script = sale.dir.join("flashtix.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("bash runs");
    assert!(syntax.status.success(), "{}", stderr(&syntax));
    for word in ["storm", "--buyers", "--seat-retry", "chaos"] {
        assert!(stdout(&bash).contains(word), "bash completes {word}");
    }
    let wrong = sale.run(&["completions", "cmd.exe"]);
    assert_exit(&wrong, 2);

    let pages = sale.dir.join("man");
    let man = sale.run(&["man", "--dir", pages.to_str().unwrap()]);
    assert_exit(&man, 0);
    let storm = std::fs::read_to_string(pages.join("flashtix-storm.1")).expect("storm's page");
    assert!(
        storm.starts_with(".ie") || storm.contains(".TH"),
        "roff: {storm:.200}"
    );
    assert!(storm.contains("seat\\-retry"), "the page lists the flags");
    assert!(
        pages.join("flashtix-chaos-run.1").exists(),
        "nested commands too"
    );
    assert!(!pages.join("flashtix-help.1").exists(), "no page for help");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsettled_sale_is_unknown_and_exits_5_and_check_settle_waits_for_it() {
    let sale = Sale::new().await;
    let (events, _) = sale.reset(&["--tickets", "10"]);
    let event = events[0]["id"].to_string();
    // Orders taken and published, and nobody to pay for them.
    let api = sale.serve("api,relay");
    let (document, _) = sale.json("storm.json");
    let storm = sale
        .run_in_background(&[
            "storm", "--target", &api.url, "--buyers", "2", "--event", &event, "--settle", "300ms",
            "--json", &document,
        ])
        .await;
    assert_exit(&storm, 5);
    assert!(
        stdout(&storm).contains("UNKNOWN: nothing failed, but not everything could be judged"),
        "{}",
        stdout(&storm)
    );
    let report: Report =
        serde_json::from_value(sale.json("storm.json").1["check"].clone()).unwrap();
    assert_eq!(report.verdict, Verdict::Unknown, "{report:#?}");
    let settled = report
        .finding(Invariant::Settled)
        .unwrap_or_else(|| panic!("no settled finding: {report:#?}"));
    assert_eq!(
        (settled.verdict, settled.offending),
        (Verdict::Unknown, 2),
        "{settled:#?}"
    );

    // Published and never processed: check cannot prove the queues drained.
    let pool = sale.pool().await;
    flashtix_testkit::until_none(
        &pool,
        std::time::Duration::from_secs(10),
        "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        "messages the relay left unpublished",
    )
    .await;
    let (json, _) = sale.json("check.json");
    let unpaid = sale.run(&["check", "--settle", "300ms", "--json", &json]);
    assert_exit(&unpaid, 5);
    let said = stdout(&unpaid);
    assert!(
        said.contains("not settled: 2 orders still PENDING after 300ms"),
        "{said}"
    );
    let unsettled = sale.json("check.json").1;
    assert_schema("check", &unsettled);
    assert!(unsettled.get("settled_seconds").is_none(), "{unsettled}");

    // With the workers, the wait ends when the orders are paid, and the sale
    // is proved then.
    let workers = sale.serve("payments,orders,notifications");
    let paid = sale
        .run_in_background(&["check", "--settle", "30s", "--json", &json])
        .await;
    assert_all_held(&paid);
    assert!(
        stdout(&paid).contains("settled: every order terminal after"),
        "{}",
        stdout(&paid)
    );
    let settled = sale.json("check.json").1;
    assert_schema("check", &settled);
    let seconds = settled["settled_seconds"].as_f64();
    assert!(
        seconds.is_some_and(|s| (0.0..30.0).contains(&s)),
        "{settled}"
    );
    drop((api, workers));
}

#[tokio::test]
async fn check_refuses_to_prove_nothing_and_changes_nothing() {
    let sale = Sale::new().await;
    let pool = sale.pool().await;
    let schema_exists = || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
        )
        .bind(&sale.namespace)
        .fetch_one(&pool)
        .await
        .unwrap()
    };

    let storm = sale.run(&["storm", "--buyers", "1"]);
    assert_exit(&storm, 2);
    assert!(
        stderr(&storm).contains("nothing to check: the namespace"),
        "{}",
        stderr(&storm)
    );
    let empty = sale.run(&["check"]);
    assert_exit(&empty, 2);
    assert!(
        stderr(&empty).contains(&format!(
            "nothing to check: the namespace {} holds no sale",
            sale.namespace
        )),
        "{}",
        stderr(&empty)
    );
    assert!(!schema_exists().await, "check made the sale's schema");

    let (events, _) = sale.reset(&["--events", "2"]);
    let ids: Vec<String> = events.iter().map(|e| e["id"].to_string()).collect();
    let missing = sale.run(&["check", "--event", "999"]);
    assert_exit(&missing, 2);
    assert!(
        stderr(&missing).contains(&format!(
            "has no event 999 (its events: {})",
            ids.join(", ")
        )),
        "{}",
        stderr(&missing)
    );
    assert_all_held(&sale.run(&["check", "--event", &ids[1]]));
    let storm = sale.run(&["storm", "--buyers", "1", "--event", "999"]);
    assert_exit(&storm, 2);
    assert!(
        stderr(&storm).contains("has no event 999"),
        "{}",
        stderr(&storm)
    );

    // A sale made by an older build: check does not bring it up to date.
    let execute = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query(sql).execute(&pool).await.unwrap() }
    };
    execute(
        "CREATE TABLE newest_migration AS SELECT * FROM _sqlx_migrations
         WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .await;
    execute("DELETE FROM _sqlx_migrations WHERE version IN (SELECT version FROM newest_migration)")
        .await;
    let older = sale.run(&["check"]);
    assert_exit(&older, 2);
    assert!(
        stderr(&older).contains("was made by an older flashtix"),
        "{}",
        stderr(&older)
    );
    let newest_applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE version IN (SELECT version FROM newest_migration)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(newest_applied, 0, "check migrated the sale");
    execute("INSERT INTO _sqlx_migrations SELECT * FROM newest_migration").await;
    execute("DROP TABLE newest_migration").await;
    assert_all_held(&sale.run(&["check"]));

    sqlx::query("TRUNCATE events CASCADE")
        .execute(&pool)
        .await
        .unwrap();
    let no_events = sale.run(&["check"]);
    assert_exit(&no_events, 2);
    assert!(
        stderr(&no_events).contains("has no events (seed them with `flashtix reset`)"),
        "{}",
        stderr(&no_events)
    );
}

#[tokio::test]
async fn check_repair_reports_the_drift_it_found_and_what_it_repaired() {
    let sale = Sale::new().await;
    let (events, _) = sale.reset(&["--tickets", "100"]);
    let event = events[0]["id"].as_i64().unwrap();
    let namespace = flashtix_server::runtime::config::Namespace::parse(&sale.namespace).unwrap();
    let gate =
        flashtix_server::gate::Gate::connect(&crate::common::test_redis_url(), namespace).unwrap();
    gate.force_stock(event, 150).await.unwrap();

    let repair = sale.run(&["check", "--repair"]);
    assert_exit(&repair, 1);
    let said = stdout(&repair);
    assert!(said.contains("FAIL: an invariant was broken"), "{said}");
    assert!(
        said.contains(&format!(
            "repaired: event {event}: Redis stock corrected from 150 to 100"
        )),
        "{said}"
    );
    assert_all_held(&sale.run(&["check"]));
}
