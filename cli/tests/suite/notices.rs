//! Notices end to end: a sale with its notifications role, a real mail
//! server (a Maildir) and a webhook receiver; `check` judging what they
//! got, and seen failing on each kind of broken receipt.

use std::time::Duration;

use serde_json::Value;

use crate::common::{assert_exit, stdout, Receivers, Sale};

/// `check --json` with these receivers and `extra` flags: its exit code and
/// each finding by invariant.
fn check(sale: &Sale, receivers: &Receivers, extra: &[&str]) -> (i32, Value) {
    let (json_file, _) = sale.json("check.json");
    let mut args: Vec<String> = vec!["check".into(), "--json".into(), json_file];
    args.extend(receivers.check_flags());
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = sale.run(&args);
    let findings: serde_json::Map<String, Value> = sale.json("check.json").1["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|f| (f["invariant"].as_str().unwrap_or("").to_owned(), f))
        .collect();
    (run.status.code().unwrap_or(-1), Value::Object(findings))
}

fn verdict<'a>(findings: &'a Value, invariant: &str) -> &'a str {
    findings[invariant]["verdict"].as_str().unwrap_or("absent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_buyer_and_organizer_hears_how_each_order_ended_once_and_truly() {
    let sale = Sale::new().await;
    let receivers = Receivers::start(&sale, Duration::ZERO).await;
    let (events, _) = sale.reset(&[
        "--tickets",
        "120",
        "--max-per-user",
        "2",
        "--webhook-url",
        &receivers.hook_url,
    ]);
    let event = events[0]["id"].as_i64().unwrap();
    // A third of the payments declined: confirmed and cancelled orders.
    let mut flags = receivers.serve_flags();
    flags.extend(["--payment-failure-rate".into(), "0.3".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = sale.serve_with("all", &flags, None);
    let storm = sale
        .run_in_background(&[
            "storm",
            "--target",
            &server.url,
            "--event",
            &event.to_string(),
            "--rate",
            "300",
            "--buyers",
            "150",
            "--duplicates",
            "0.2",
            "--seed",
            "31",
        ])
        .await;
    assert_exit(&storm, 0);

    let (code, findings) = check(&sale, &receivers, &["--settle", "60s"]);
    for invariant in [
        "notices_true",
        "notices_once",
        "notices_sent",
        "webhooks_signed",
        "webhooks_delivered",
    ] {
        assert_eq!(
            verdict(&findings, invariant),
            "PASS",
            "{invariant}: {findings:#}"
        );
    }
    assert_eq!(code, 0, "{findings:#}");
    let pool = sale.pool().await;
    let (confirmed, cancelled): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'CONFIRMED'),
                count(*) FILTER (WHERE status = 'CANCELLED') FROM orders",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(confirmed > 0 && cancelled > 0, "{confirmed} {cancelled}");
    let mails = receivers.mails();
    assert_eq!(
        mails.len() as i64,
        confirmed + cancelled,
        "one mail an order"
    );
    assert_eq!(
        findings["webhooks_delivered"]["checked"].as_i64(),
        Some(confirmed + cancelled),
        "{findings:#}"
    );

    // Broken receipts, one at a time, each put back after.
    let original = std::fs::read_to_string(&mails[0]).unwrap();
    let told = if original.contains("X-Flashtix-Ending: CONFIRMED") {
        (
            "X-Flashtix-Ending: CONFIRMED",
            "X-Flashtix-Ending: CANCELLED",
        )
    } else {
        (
            "X-Flashtix-Ending: CANCELLED",
            "X-Flashtix-Ending: CONFIRMED",
        )
    };
    let broken = |name: &str, text: String| {
        let path = mails[0].with_file_name(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let lie = broken("lie.eml", original.replace(told.0, told.1));
    let (code, findings) = check(&sale, &receivers, &[]);
    assert_eq!(verdict(&findings, "notices_true"), "FAIL", "{findings:#}");
    assert_eq!(code, 1);
    std::fs::remove_file(lie).unwrap();

    let again = broken("again.eml", original.clone());
    let (_, findings) = check(&sale, &receivers, &[]);
    assert_eq!(verdict(&findings, "notices_once"), "PASS", "{findings:#}");
    assert!(
        findings["notices_once"]["detail"]
            .as_str()
            .unwrap()
            .contains("1 sent again"),
        "{findings:#}"
    );
    std::fs::remove_file(again).unwrap();
    let other_id = original.replacen("Message-ID: <", "Message-ID: <another.", 1);
    let second = broken("second.eml", other_id);
    let (_, findings) = check(&sale, &receivers, &[]);
    assert_eq!(verdict(&findings, "notices_once"), "FAIL", "{findings:#}");
    std::fs::remove_file(second).unwrap();

    let kept = std::env::temp_dir().join(format!("{}.kept", sale.namespace));
    std::fs::rename(&mails[0], &kept).unwrap();
    let (_, findings) = check(&sale, &receivers, &["--notice-grace", "10m"]);
    assert_eq!(
        verdict(&findings, "notices_sent"),
        "UNKNOWN",
        "within the grace"
    );
    let (_, findings) = check(&sale, &receivers, &["--notice-grace", "0s"]);
    assert_eq!(verdict(&findings, "notices_sent"), "FAIL", "{findings:#}");
    std::fs::rename(&kept, &mails[0]).unwrap();

    let record = receivers.receipts.webhook_record();
    let deliveries = std::fs::read_to_string(&record).unwrap();
    let first: Value = serde_json::from_str(deliveries.lines().next().unwrap()).unwrap();
    let mut forged = first.clone();
    forged["body"] = Value::String(
        first["body"]
            .as_str()
            .unwrap()
            .replace("\"quantity\":", "\"quantity\":1"),
    );
    std::fs::write(&record, format!("{deliveries}{forged}\n")).unwrap();
    let (_, findings) = check(&sale, &receivers, &[]);
    assert_eq!(
        verdict(&findings, "webhooks_signed"),
        "FAIL",
        "{findings:#}"
    );
    // A delivery the receiver took, gone from its record: the organizer
    // was never told, as far as the witness knows.
    let taken_out: String = deliveries
        .lines()
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&record, taken_out).unwrap();
    let (_, findings) = check(&sale, &receivers, &["--notice-grace", "0s"]);
    assert_eq!(
        verdict(&findings, "webhooks_delivered"),
        "FAIL",
        "{findings:#}"
    );
    std::fs::write(&record, &deliveries).unwrap();

    // All put back: PASS again.
    let (code, findings) = check(&sale, &receivers, &[]);
    assert_eq!(code, 0, "{findings:#}");
    assert!(stdout(&sale.run(&["check"])).contains("PASS"));
}
