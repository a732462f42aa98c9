//! The notices' known mistakes, each caught by `check` reading the real
//! receivers, while the same sale on the real server passes.

use std::time::Duration;

use serde_json::Value;

use crate::common::{self, Receivers, Sale, Server};
use flashtix_model::Role;
use flashtix_server::invariants::Invariant;

/// A sale with its receivers, served by its processes.
struct Told {
    /// Stopped before the sale goes (fields drop in order).
    servers: Vec<Server>,
    receivers: Receivers,
    sale: Sale,
    event: i64,
}

impl Told {
    /// Seeds a sale (`reset`'s flags) with receivers of its own, whose mail
    /// server holds each message `delay`; nothing serves it yet.
    async fn seed(reset: &[&str], delay: Duration) -> Self {
        let sale = Sale::new().await;
        let receivers = Receivers::start(&sale, delay).await;
        let mut flags = reset.to_vec();
        flags.extend(["--webhook-url", &receivers.hook_url]);
        let (events, _) = sale.reset(&flags);
        Self {
            servers: Vec::new(),
            event: events[0]["id"].as_i64().expect("an event id"),
            receivers,
            sale,
        }
    }

    /// A process of `roles` with `serve`'s flags, sending to the receivers,
    /// making the mistakes `bugs`.
    fn serve(&self, roles: &str, serve: &[&str], bugs: Option<&str>) -> Server {
        let mut flags = self.receivers.serve_flags();
        flags.extend(serve.iter().map(|s| s.to_string()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        self.sale.serve_with(roles, &flags, bugs)
    }

    /// A sale served whole by one process.
    async fn open(reset: &[&str], serve: &[&str], bugs: Option<&str>) -> Self {
        let mut told = Self::seed(reset, Duration::ZERO).await;
        told.servers.push(told.serve("all", serve, bugs));
        told
    }

    /// A storm with these flags (split at spaces) on the sale's first server.
    async fn storm(&self, flags: &str) {
        let args = format!(
            "storm --target {} --event {} {flags}",
            self.servers[0].url, self.event
        );
        let args: Vec<&str> = args.split_whitespace().collect();
        let run = self.sale.run_in_background(&args).await;
        assert!(
            matches!(run.status.code(), Some(0 | 1 | 5)),
            "{}",
            common::stderr(&run)
        );
    }

    /// `check --settle` with the receivers and `extra` flags; the report.
    async fn judged(&self, extra: &[&str]) -> Value {
        let (file, _) = self.sale.json("check.json");
        let mut args: Vec<String> = vec!["check".into(), "--settle".into(), "90s".into()];
        args.extend(["--json".into(), file]);
        args.extend(self.receivers.check_flags());
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = self.sale.run_in_background(&args).await;
        let report = self.sale.json("check.json").1;
        assert!(report.is_object(), "{}", common::stderr(&run));
        report
    }
}

fn finding(report: &Value, invariant: Invariant) -> &Value {
    report["findings"]
        .as_array()
        .and_then(|all| all.iter().find(|f| f["invariant"] == invariant.name()))
        .unwrap_or_else(|| panic!("no {invariant} in {report:#}"))
}

fn assert_fails(report: &Value, invariant: Invariant) {
    assert_eq!(finding(report, invariant)["verdict"], "FAIL", "{report:#}");
    assert_eq!(report["verdict"], "FAIL");
}

/// Every payment comes after its order's hold ran out: the order expires,
/// and the payment is refunded. A worker that tells the buyer what the
/// payment said, before its transaction decided, announces CONFIRMED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_sent_before_the_settlement_commits_fails_notices_true() {
    let reset = ["--tickets", "60", "--hold-seconds", "1"];
    let serve = ["--payment-latency-ms", "1500", "--sweep-ms", "100"];
    let (bad, good) = tokio::join!(
        Told::open(&reset, &serve, Some("notice-before-commit")),
        Told::open(&reset, &serve, None),
    );
    let storm = "--rate 60 --buyers 40 --settle 60s";
    tokio::join!(bad.storm(storm), good.storm(storm));
    let (bad, good) = tokio::join!(bad.judged(&[]), good.judged(&[]));
    assert_fails(&bad, Invariant::NoticesTrue);
    let lie = finding(&bad, Invariant::NoticesTrue)["examples"][0].to_string();
    assert!(
        lie.contains("ended EXPIRED then REFUNDED") && lie.contains("CONFIRMED"),
        "{lie}"
    );
    assert_eq!(good["verdict"], "PASS", "{good:#}");
    // Both endings were told: 40 expiries and 40 refunds.
    assert_eq!(
        finding(&good, Invariant::NoticesSent)["checked"],
        80,
        "{good:#}"
    );
}

/// Every order of a storm ends, with nobody told yet; then the
/// notifications process takes them all in one batch, on a slow mail
/// server, and is killed as the first mails arrive, and started again: the
/// mails taken but not yet recorded are sent again.
async fn killed_mid_send(bugs: Option<&str>) -> Told {
    let reset = ["--tickets", "200", "--max-per-user", "1"];
    let mut told = Told::seed(&reset, Duration::from_millis(400)).await;
    let others: Vec<&str> = Role::ALL
        .iter()
        .filter(|role| **role != Role::Notifications)
        .map(|role| role.name())
        .collect();
    let declined = ["--payment-failure-rate", "0.2"];
    told.servers
        .push(told.serve(&others.join(","), &declined, bugs));
    told.storm("--rate 400 --buyers 200 --no-check").await;
    let pool = told.sale.pool().await;
    let waiting = "SELECT (SELECT count(*) FROM orders WHERE status = 'PENDING')
                        + (SELECT count(*) FROM outbox WHERE published_at IS NULL)";
    flashtix_testkit::until_none(
        &pool,
        Duration::from_secs(60),
        waiting,
        "orders or messages",
    )
    .await;
    let mut notifications = told.serve("notifications", &[], bugs);
    flashtix_testkit::eventually(Duration::from_secs(30), || async {
        match told.receivers.mails().len() {
            0 => Err("no mail yet".to_owned()),
            _ => Ok(()),
        }
    })
    .await;
    notifications.kill();
    let sent_before_the_kill = told.receivers.mails().len();
    assert!(
        sent_before_the_kill < 200,
        "killed mid-send: {sent_before_the_kill}"
    );
    told.servers.push(told.serve("notifications", &[], bugs));
    told
}

/// A mail whose Message-ID is new at each send makes a resend a second,
/// different notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_message_id_per_send_fails_notices_once_after_a_crash() {
    let (bad, good) = tokio::join!(
        killed_mid_send(Some("new-message-id-per-send")),
        killed_mid_send(None)
    );
    let (bad, good) = tokio::join!(bad.judged(&[]), good.judged(&[]));
    assert_fails(&bad, Invariant::NoticesOnce);
    assert_eq!(good["verdict"], "PASS", "{good:#}");
    let once = finding(&good, Invariant::NoticesOnce)["detail"].to_string();
    assert!(
        once.contains("sent again under the same Message-ID"),
        "resent: {once}"
    );
}

/// Recording a batch's notices as sent, and acknowledging it, before
/// sending: a crash mid-send loses the mails not yet taken, for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledging_before_sending_fails_notices_sent_after_a_crash() {
    let (bad, good) = tokio::join!(
        killed_mid_send(Some("ack-before-send")),
        killed_mid_send(None)
    );
    // The lost mails are missing for good: FAIL once the grace (30 s from
    // each order's end) has passed.
    let (bad, good) = tokio::join!(bad.judged(&[]), good.judged(&[]));
    assert_fails(&bad, Invariant::NoticesSent);
    assert_eq!(good["verdict"], "PASS", "{good:#}");
}
