//! `flashtix chaos` end to end: drills run against services of their own
//! (never the machine's), pass on the real server, and fail on a server that
//! makes one of the known mistakes — a drill that cannot fail proves nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assert_exit, stdout};
use flashtix_server::invariants::{Invariant, Report};
use serde_json::Value;

/// The catalogue, from the repository.
fn catalogue() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/chaos")
}

/// One drill run at a time: each starts a Postgres, Redis and RabbitMQ of its
/// own and a sale of six processes, and two cores are not enough for more
/// without the drills measuring the crowd instead of the faults.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `flashtix chaos ARGS` with the server's known mistake `bug` (if any)
/// switched on; returns the run and its JSON reports.
fn chaos(args: &[&str], bug: Option<&str>, json: &Path) -> (Output, Vec<Value>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flashtix"));
    command
        .arg("chaos")
        .args(args)
        .args(["--json", json.to_str().unwrap()])
        .env("FLASHTIX_DRILLS", catalogue())
        .env_remove("FLASHTIX_KNOWN_BAD");
    if let Some(bug) = bug {
        command.env("FLASHTIX_KNOWN_BAD", bug);
    }
    let run = {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        command.output().expect("flashtix runs")
    };
    let reports = std::fs::read(json)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    (run, reports)
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("flashtix-chaos-test-{}-{name}", std::process::id()))
}

/// A short drill: 200 buyers a second for 8 s, its faults, tight limits;
/// `server` adds `flashtix serve` flags.
fn short_drill(name: &str, server: &str, fault: &str) -> PathBuf {
    let path = temp(&format!("{name}.toml"));
    let text = format!(
        r#"description = "{name}"
[sale]
tickets = 3000
[storm]
rate = 200.0
buyers = 1600
timeout = "3s"
retries = 2
[server]
payment-failure-rate = 0.2
{server}
{fault}
[limits]
recover = "15s"
settle = "15s"
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn reasons(report: &Value) -> String {
    report["reasons"].to_string()
}

#[test]
fn the_catalogue_lists_every_drill_and_a_wrong_name_is_a_usage_error() {
    let list = Command::new(env!("CARGO_BIN_EXE_flashtix"))
        .args(["chaos", "list"])
        .env("FLASHTIX_DRILLS", catalogue())
        .output()
        .unwrap();
    assert_exit(&list, 0);
    for drill in [
        "kill-api",
        "kill-payments",
        "kill-orders",
        "kill-relay",
        "pause-payments",
        "restart-rabbitmq",
        "restart-postgres",
        "restart-redis",
        "flush-redis",
        "postgres-latency",
        "rabbitmq-blackhole",
        "api-drop-responses",
        "duplicate-delivery",
        "restart-everything",
        "seated-restart-postgres",
        "kill-notifications",
        "smtp-down",
        "smtp-slow",
        "webhook-flaky",
    ] {
        assert!(stdout(&list).contains(drill), "{drill}: {}", stdout(&list));
    }
    let json = temp("wrong-name.json");
    let (run, _) = chaos(&["run", "kill-the-moon"], None, &json);
    assert_exit(&run, 2);
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("no drill \"kill-the-moon\""),
        "{run:?}"
    );
}

/// CI's quick subset of the catalogue: a worker killed, Redis wiped, the API's
/// answers lost, Postgres killed under a seated sale. Each passes, and each
/// fault visibly happened.
#[test]
fn drills_of_the_catalogue_pass_on_the_real_server() {
    let json = temp("catalogue.json");
    let drills = [
        "kill-payments",
        "flush-redis",
        "api-drop-responses",
        "seated-restart-postgres",
    ];
    let mut args = vec!["run"];
    args.extend(drills);
    let (run, reports) = chaos(&args, None, &json);
    assert_exit(&run, 0);
    assert!(
        stdout(&run).contains("PASS: every drill held"),
        "{}",
        stdout(&run)
    );
    assert_eq!(reports.len(), drills.len());
    common::assert_schema("chaos", &Value::Array(reports.clone()));
    let mut untold = reports.clone();
    untold[0].as_object_mut().unwrap().remove("verdict");
    assert!(
        !common::schema_errors("chaos", &Value::Array(untold)).is_empty(),
        "a report without its verdict is refused"
    );
    for (report, drill) in reports.iter().zip(drills) {
        assert_eq!(report["drill"], drill);
        assert_eq!(report["verdict"], "PASS", "{}", reasons(report));
        assert_eq!(report["check"]["verdict"], "PASS");
        let fault = &report["faults"][0];
        assert!(fault["recovered"].as_f64().is_some(), "{fault}");
    }
    // Answers swallowed: buyers timed out inside the window, retried under
    // their keys, and were answered with the order they already had.
    let dropped = &reports[2];
    assert!(
        dropped["faults"][0]["errors"].as_u64().unwrap() > 0,
        "{dropped}"
    );
    assert!(
        dropped["outcomes"]["replayed"].as_u64().unwrap() > 0,
        "{dropped}"
    );
    // Postgres gone under a seated sale: buyers met errors in the window,
    // seats were sold and raced for, and every answer's seats were checked.
    let seated = &reports[3];
    assert!(
        seated["faults"][0]["errors"].as_u64().unwrap() > 0,
        "{seated}"
    );
    assert!(
        seated["outcomes"]["accepted"].as_u64().unwrap() > 0,
        "{seated}"
    );
    assert!(
        seated["outcomes"]["seat_taken"].as_u64().unwrap() > 0,
        "{seated}"
    );
    let report: Report = serde_json::from_value(seated["check"].clone()).unwrap();
    assert!(
        report
            .finding(Invariant::OneOwnerPerSeat)
            .is_some_and(|f| f.checked > 0),
        "{seated}"
    );
}

/// The notices' drills: the notifications role killed mid-send, the mail
/// server cut off and slowed, the organizer's receiver failing half its
/// deliveries. Each passes, with every buyer and organizer told, judged by
/// what the mail server and the webhook receiver got.
#[test]
fn the_notice_drills_pass_with_every_buyer_and_organizer_told() {
    let json = temp("notices.json");
    let drills = [
        "kill-notifications",
        "smtp-down",
        "smtp-slow",
        "webhook-flaky",
    ];
    let mut args = vec!["run"];
    args.extend(drills);
    let (run, reports) = chaos(&args, None, &json);
    assert_exit(&run, 0);
    assert_eq!(reports.len(), drills.len());
    for (report, drill) in reports.iter().zip(drills) {
        assert_eq!(report["drill"], drill);
        assert_eq!(report["verdict"], "PASS", "{}", reasons(report));
        let check: Report = serde_json::from_value(report["check"].clone()).unwrap();
        for invariant in [
            Invariant::NoticesTrue,
            Invariant::NoticesOnce,
            Invariant::NoticesSent,
            Invariant::WebhooksSigned,
            Invariant::WebhooksDelivered,
        ] {
            let finding = check.finding(invariant).expect("judged by the receivers");
            assert!(finding.checked > 1000, "{drill} {invariant}: {finding:?}");
        }
    }
}

/// Runs a short drill on a server making `bug`: the drill must FAIL because
/// orders never settle. The same drill on the real server must PASS.
fn assert_bug_leaves_orders_pending(bug: &str, server: &str, fault: &str) {
    let drill = short_drill(bug, server, fault);
    let drill = drill.to_str().unwrap();
    let json = temp(&format!("{bug}.json"));
    let (bad, reports) = chaos(&["run", drill], Some(bug), &json);
    assert_exit(&bad, 1);
    let report = reports.first().unwrap_or_else(|| {
        panic!(
            "the drill wrote no report; it said:\n{}",
            String::from_utf8_lossy(&bad.stderr)
        )
    });
    assert!(reasons(report).contains("PENDING"), "{}", reasons(report));

    let (good, reports) = chaos(&["run", drill], None, &json);
    assert_exit(&good, 0);
    assert_eq!(reports[0]["verdict"], "PASS", "{}", reasons(&reports[0]));
}

/// A payment worker that acknowledges before it commits loses the batch it
/// holds when killed: orders never settle, and the kill drill says so. The
/// provider takes 200 ms a batch, so the worker is inside a batch (acked, not
/// committed) nearly all the time, and it is killed twice.
#[test]
fn a_worker_that_acks_before_commit_fails_the_kill_drill() {
    let kill = |at: &str| {
        format!("[[fault]]\nat = \"{at}\"\ntarget = \"payments\"\naction = \"kill\"\nduration = \"1s\"\n")
    };
    assert_bug_leaves_orders_pending(
        "ack-before-commit",
        "payment-latency-ms = 200",
        &(kill("2s") + &kill("5s")),
    );
}

/// A relay that marks messages published before the broker has them loses
/// the batch in flight when RabbitMQ dies: orders never settle. RabbitMQ is
/// 200 ms away while it is killed, and the relay's passes are 20 ms apart,
/// so a batch is always in flight then. RabbitMQ takes longer to start again
/// than this storm has left to run, so the kill is declared to last to the
/// storm's end: what this drill judges is settlement, not recovery.
#[test]
fn a_relay_that_publishes_after_commit_fails_the_rabbitmq_kill_drill() {
    assert_bug_leaves_orders_pending(
        "publish-before-commit",
        "relay-ms = 20",
        "[[fault]]\nat = \"1s\"\ntarget = \"rabbitmq\"\naction = \"latency\"\ndelay = \"200ms\"\nduration = \"6s\"\n\
         [[fault]]\nat = \"4s\"\ntarget = \"rabbitmq\"\naction = \"kill\"\nduration = \"1s\"\n\
         until-storm-ends = true",
    );
}

/// `flashtix watch --drill DIR` follows a drill while it runs: `chaos` names
/// the directory as it starts the drill, and the screen shows the drill's
/// processes, the paused one not answering, and the fault in force.
#[test]
fn a_running_drill_can_be_watched_with_its_fault_in_force() {
    use std::io::BufRead;
    let pause =
        "[[fault]]\nat = \"1s\"\ntarget = \"payments\"\naction = \"pause\"\nduration = \"6s\"\n";
    let drill = short_drill("watched", "", pause);
    let json = temp("watched.json");
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut chaos = Command::new(env!("CARGO_BIN_EXE_flashtix"))
        .args(["chaos", "run", drill.to_str().unwrap()])
        .args(["--json", json.to_str().unwrap()])
        .env("FLASHTIX_DRILLS", catalogue())
        .env_remove("FLASHTIX_KNOWN_BAD")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("flashtix runs");
    let mut said = std::io::BufReader::new(chaos.stderr.take().unwrap()).lines();
    let hint = "watch it live: flashtix watch --drill ";
    let dir = said
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| line.split_once(hint).map(|(_, dir)| dir.to_owned()))
        .expect("chaos names the drill's directory");
    let rest = std::thread::spawn(move || said.map_while(Result::ok).collect::<Vec<_>>());

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let screen = loop {
        let watch = Command::new(env!("CARGO_BIN_EXE_flashtix"))
            .args([
                "watch", "--drill", &dir, "--print", "-", "--after", "1500ms",
            ])
            .output()
            .expect("flashtix runs");
        let screen = stdout(&watch);
        // A fresh watcher hears nothing from the paused process.
        let paused = screen.contains("down: no answer in time");
        if screen.contains("IN FORCE: pause payments") && paused {
            break screen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fault never showed in force: {screen}{}",
            String::from_utf8_lossy(&watch.stderr)
        );
    };
    let processes = flashtix_model::roles::PROCESSES.len();
    assert_eq!(
        screen.matches('●').count(),
        processes,
        "every process: {screen}"
    );
    assert!(screen.contains(" api up"), "{screen}");
    assert_eq!(
        screen.matches(" up ").count(),
        processes - 1,
        "the others answer: {screen}"
    );
    assert!(
        screen.contains("left ") && screen.contains("/3000"),
        "{screen}"
    );
    let status = chaos.wait().unwrap();
    let rest = rest.join().unwrap().join("\n");
    assert_eq!(status.code(), Some(0), "{rest}");
}

/// A drill's `[sale]`, `[storm]` and `[server]` are read into the types
/// `reset`, `storm` and `serve` read: a mistake in one is named, with its
/// table, before anything runs.
#[test]
fn a_drill_with_a_mistake_in_its_tables_is_refused_before_anything_runs() {
    let kill = "[[fault]]\nat = \"1s\"\ntarget = \"payments\"\naction = \"kill\"\n";
    for (name, from, to, says) in [
        ("sale", "tickets = 3000", "tickets = \"many\"", "[sale]"),
        (
            "storm",
            "buyers = 1600",
            "buyer = 1600",
            "unknown field `buyer`",
        ),
        (
            "model",
            "buyers = 1600",
            "buyers = 1600\nconcurrency = 4",
            "more than one of rate, ramp, spike and concurrency",
        ),
        (
            "server",
            "payment-failure-rate = 0.2",
            "payment-failure-rate = \"often\"",
            "[server]: invalid value 'often' for '--payment-failure-rate",
        ),
        (
            // 1600 buyers at 200/s: the storm stops sending at 8 s.
            "late",
            "at = \"1s\"",
            "at = \"9s\"",
            "fault 1 (kill payments): at 9s may fall after the storm stops sending (at 8s)",
        ),
    ] {
        let path = short_drill(&format!("typed-{name}"), "", kill);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{text}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        let json = temp(&format!("typed-{name}.json"));
        let (refused, reports) = chaos(&["run", path.to_str().unwrap()], None, &json);
        assert_exit(&refused, 2);
        assert!(reports.is_empty(), "{name}: no drill ran");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(said.contains(says), "{name}: {said}");
    }
}

/// A drill proves its faults happened: a pause of a process already down
/// and a republish with nothing published fail it, and so does a fault that
/// lasts to the storm's end, whose recovery no request could show, unless
/// the file says it is meant to (the relay's kill here). A fault that might
/// fall after the storm stops sending is refused before anything runs.
#[test]
fn a_drill_fails_on_faults_that_did_nothing_or_could_not_be_measured() {
    let fault = |at: &str, target: &str, action: &str, rest: &str| {
        format!("[[fault]]\nat = \"{at}\"\ntarget = \"{target}\"\naction = \"{action}\"\n{rest}\n")
    };
    let late = short_drill("late", "", &fault("7s..9s", "redis", "flush", ""));
    let json = temp("late.json");
    let (refused, reports) = chaos(&["run", late.to_str().unwrap()], None, &json);
    assert_exit(&refused, 2);
    assert!(reports.is_empty());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("fault 1 (flush redis): at 7s..9s may fall after the storm stops sending"),
        "{refused:?}"
    );

    let faults = [
        fault("0s", "relay", "kill", "until-storm-ends = true"),
        fault("3s", "rabbitmq", "republish", ""),
        fault("4s", "relay", "pause", "duration = \"1s\""),
        fault("5s", "redis", "blackhole", ""),
    ]
    .concat();
    let drill = short_drill("hollow", "", &faults);
    let json = temp("hollow.json");
    let (run, reports) = chaos(&["run", drill.to_str().unwrap()], None, &json);
    assert_exit(&run, 1);
    let why = reasons(&reports[0]);
    for says in [
        "republish rabbitmq: nothing to republish: no message had been published yet",
        "pause relay: relay is not running: there is nothing to pause",
        "blackhole redis: lasted to the storm's end",
    ] {
        assert!(why.contains(says), "expected {says:?} in {why}");
    }
    assert!(!why.contains("kill relay"), "declared to last: {why}");
}

/// Postgres answers 2 s late for 5 s: first tries time out (after 3 s) and
/// their retries wait, for longer than a retry waits, on orders still being
/// written. A server that calls such a retry `sold_out` (the first try's
/// order then commits) fails the drill on what the history shows it told
/// buyers; the real server, answering `request_in_progress`, passes.
///
/// Whether a retry meets its first try still being written depends on how
/// the slow queries queue for the pool's connections: a run on this machine
/// has told from 0 to 190 buyers `sold_out` that way. So the bad server gets
/// five runs (five seeds, one stack) and must be caught in at least one.
#[test]
fn a_retry_told_sold_out_while_its_first_try_commits_fails_the_drill() {
    let bug = "refusal-after-timeout";
    let drill = short_drill(
        bug,
        "",
        "[[fault]]\nat = \"1s\"\ntarget = \"postgres\"\naction = \"latency\"\n\
         delay = \"2s\"\nduration = \"5s\"",
    );
    let drill = drill.to_str().unwrap();
    let json = temp(&format!("{bug}.json"));
    let (bad, reports) = chaos(&["run", drill, "--repeat", "5"], Some(bug), &json);
    assert_exit(&bad, 1);
    // The lie is seen one of two ways, depending on where the refusal fell
    // against the order's own timestamp: sent after the order was made (the
    // answer contradicts the order), or before it while tickets were still
    // for sale (the refusal was never true).
    let why: Vec<String> = reports.iter().map(reasons).collect();
    assert!(
        why.iter()
            .any(|why| why.contains("answers_match_orders FAIL")
                || why.contains("refusals_were_true FAIL")),
        "{why:?}"
    );

    let (good, reports) = chaos(&["run", drill], None, &json);
    assert_exit(&good, 0);
    assert_eq!(reports[0]["verdict"], "PASS", "{}", reasons(&reports[0]));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// `up --driver local` starts Postgres, Redis and RabbitMQ of our own that a
/// sale can be seeded on; `up --down` stops exactly those.
#[test]
fn up_starts_services_of_our_own_and_down_stops_them() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp("up");
    let ports = [free_port(), free_port(), free_port()];
    let ports_flag = format!("{},{},{}", ports[0], ports[1], ports[2]);
    let flashtix = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_flashtix"))
            .args(args)
            .args(["--dir", dir.to_str().unwrap(), "--ports", &ports_flag])
            .output()
            .unwrap()
    };
    let up = flashtix(&["up", "--driver", "local", "--env"]);
    assert_exit(&up, 0);
    let exports: Vec<(String, String)> = stdout(&up)
        .lines()
        .filter_map(|line| {
            let (name, value) = line.strip_prefix("export ")?.split_once('=')?;
            Some((name.to_owned(), value.trim_matches('\'').to_owned()))
        })
        .collect();
    assert_eq!(exports.len(), 3, "{}", stdout(&up));
    assert!(ports.iter().all(|&port| answers(port)));

    let reset = Command::new(env!("CARGO_BIN_EXE_flashtix"))
        .args(["reset", "--yes", "--tickets", "5", "--namespace", "up_test"])
        .env_remove("DATABASE_URL")
        .envs(exports)
        .output()
        .unwrap();
    assert_exit(&reset, 0);

    let down = flashtix(&["up", "--down"]);
    assert_exit(&down, 0);
    assert!(stdout(&down).contains("stopped postgres, redis, rabbitmq"));
    assert!(ports.iter().all(|&port| !answers(port)), "all stopped");
    let _ = std::fs::remove_dir_all(&dir);
}
