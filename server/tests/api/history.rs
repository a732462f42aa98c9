//! "No lost order" from a client's history: answered orders exist, stored
//! orders were asked for, unknown outcomes are resolved, not blamed.

use chrono::{DateTime, Utc};
use flashtix_model::history::{Attempt, Outcome};
use flashtix_server::invariants::{self, Invariant, Verdict};
use reqwest::StatusCode;
use uuid::Uuid;

use crate::helpers::{distinct_buyers, spawn_app, Answer, TestApp};

pub(crate) fn attempt(
    event_id: i64,
    number: u64,
    user: &str,
    key: &str,
    outcome: Outcome,
    order_id: Option<Uuid>,
) -> Attempt {
    Attempt {
        attempt: number,
        event_id,
        user_id: user.into(),
        idempotency_key: key.into(),
        quantity: 1,
        sent_at: Utc::now(),
        finished_at: Utc::now(),
        outcome,
        status: None,
        order_id,
        seats: None,
        asked_seats: None,
        asked_zone: None,
        amount_cents: None,
    }
}

fn from_answer(event_id: i64, number: u64, user: &str, key: &str, answer: &Answer) -> Attempt {
    let (outcome, order_id) = match answer.status {
        StatusCode::ACCEPTED => (Outcome::Accepted, answer.order_id().parse().ok()),
        _ => (Outcome::SoldOut, None),
    };
    Attempt {
        status: Some(answer.status.as_u16()),
        ..attempt(event_id, number, user, key, outcome, order_id)
    }
}

async fn lost_order_finding(app: &TestApp, history: &[Attempt]) -> invariants::Finding {
    history_finding(app, history, Invariant::NoLostOrder).await
}

pub(crate) async fn history_finding(
    app: &TestApp,
    history: &[Attempt],
    invariant: Invariant,
) -> invariants::Finding {
    let report = invariants::check(
        &app.pool,
        &app.gate,
        Err("not used".into()),
        Some(invariants::History::new(history)),
        None,
    )
    .await
    .unwrap();
    report.finding(invariant).unwrap().clone()
}

/// `invariant` FAILs on `history`, one of its examples saying `says`.
pub(crate) async fn assert_history_fails(
    app: &TestApp,
    history: &[Attempt],
    invariant: Invariant,
    says: &str,
) {
    let finding = history_finding(app, history, invariant).await;
    assert_eq!(finding.verdict, Verdict::Fail, "{finding:?}");
    assert!(
        finding.examples.iter().any(|e| e.contains(says)),
        "expected {says:?} in {finding:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_proves_no_order_was_lost_or_invented() {
    let app = spawn_app().await;
    let event = app.create_event(20, 4).await;
    let buyers = distinct_buyers(30);
    let answers = app.storm(event, buyers.clone()).await;
    let mut history: Vec<Attempt> = buyers
        .iter()
        .zip(&answers)
        .enumerate()
        .map(|(n, ((user, key, _), answer))| from_answer(event, n as u64, user, key, answer))
        .collect();
    // Two requests whose answers never came back: one made an order, one not.
    let late = app.order(event, "slow", "k-slow", 1).await;
    assert_eq!(late.status, StatusCode::CONFLICT, "sold out by now");
    let slow = attempt(event, 30, "slow", "k-slow", Outcome::Timeout, None);
    history.push(Attempt {
        finished_at: slow.sent_at + chrono::Duration::seconds(3),
        ..slow
    });
    let extra = app.create_event(5, 4).await;
    let made = app.order(extra, "lucky", "k-lucky", 1).await;
    assert_eq!(made.status, StatusCode::ACCEPTED);
    history.push(attempt(
        extra,
        31,
        "lucky",
        "k-lucky",
        Outcome::Timeout,
        None,
    ));

    let clean = lost_order_finding(&app, &history).await;
    assert_eq!(clean.verdict, Verdict::Pass, "{clean:?}");
    assert_eq!(clean.checked, 20);
    assert!(
        clean
            .detail
            .contains("unknown outcomes: 1 became orders, 1 did not"),
        "{clean:?}"
    );

    // Lose an answered order, and invent one nobody asked for.
    let lost: Uuid = answers
        .iter()
        .find(|a| a.status == StatusCode::ACCEPTED)
        .unwrap()
        .order_id()
        .parse()
        .unwrap();
    sqlx::query("DELETE FROM orders WHERE id = $1")
        .bind(lost)
        .execute(&app.pool)
        .await
        .unwrap();
    // Made while the history was written, by nobody in it.
    let first_send = history.iter().map(|a| a.sent_at).min().unwrap();
    let meanwhile = first_send + chrono::Duration::seconds(1);
    let invented = insert_order(&app, event, "ghost", meanwhile).await;

    let broken = lost_order_finding(&app, &history).await;
    assert_eq!(broken.verdict, Verdict::Fail);
    assert_eq!(broken.offending, 2);
    let named = broken.examples.join("\n");
    assert!(
        named.contains(&format!("order {lost}: answered")),
        "{named}"
    );
    assert!(
        named.contains(&format!(
            "order {invented}: user \"ghost\" key \"k-ghost\" made at"
        )) && named.contains("nobody in it asked for it"),
        "{named}"
    );
}

/// Inserts an order of `user` (key `k-USER`) as if committed at `created_at`.
async fn insert_order(app: &TestApp, event: i64, user: &str, created_at: DateTime<Utc>) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO orders (id, event_id, user_id, idempotency_key, fingerprint, quantity,
                             amount_cents, expires_at, created_at)
         VALUES ($1, $2, $3, 'k-' || $3, 'x', 1, 0, now() + interval '1 hour', $4)",
    )
    .bind(id)
    .bind(event)
    .bind(user)
    .bind(created_at)
    .execute(&app.pool)
    .await
    .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_does_not_judge_orders_made_outside_it() {
    let app = spawn_app().await;
    let event = app.create_event(20, 4).await;
    let buyers = distinct_buyers(5);
    let sent_at = Utc::now();
    let answers = app.storm(event, buyers.clone()).await;
    let mut history: Vec<Attempt> = buyers
        .iter()
        .zip(&answers)
        .enumerate()
        .map(|(n, ((user, key, _), answer))| Attempt {
            sent_at,
            ..from_answer(event, n as u64, user, key, answer)
        })
        .collect();
    // A request that waited 3 s for nothing: the history spans 3 s.
    let (second, millisecond) = (
        chrono::Duration::seconds(1),
        chrono::Duration::milliseconds(1),
    );
    history.push(Attempt {
        sent_at,
        finished_at: sent_at + second * 3,
        ..attempt(event, 5, "slow", "k-slow", Outcome::Timeout, None)
    });
    let last_answer = sent_at + second * 3;
    // A buyer at the sale long before the storm began (the README's alice),
    // and one after it ended.
    let early = insert_order(&app, event, "early", sent_at - second * 90).await;
    let late = insert_order(&app, event, "late", last_answer + second * 2).await;

    let finding = lost_order_finding(&app, &history).await;
    assert_eq!(finding.verdict, Verdict::Pass, "{finding:?}");
    assert_eq!(finding.checked, 5);
    let detail = &finding.detail;
    assert!(
        detail.contains("; 2 orders made outside the history (not judged"),
        "{detail}"
    );
    for (order, said) in [
        (
            early,
            "user \"early\" key \"k-early\", 90 s before the first send)",
        ),
        (
            late,
            "user \"late\" key \"k-late\", 2.0 s after the last answer)",
        ),
    ] {
        assert!(
            detail.contains(&format!("order {order} ({said}")),
            "{detail}"
        );
    }

    // One a moment after the first send, by a database clock that may be
    // that much behind the client's: nobody can tell.
    let edge = insert_order(&app, event, "edge", sent_at + millisecond * 40).await;
    let finding = lost_order_finding(&app, &history).await;
    assert_eq!(finding.verdict, Verdict::Unknown, "{finding:?}");
    assert_eq!(finding.offending, 1);
    assert_eq!(
        finding.examples,
        [format!(
            "order {edge}: user \"edge\" key \"k-edge\" made 0.040 s after the first send, \
             nobody in the history asked for it, and the clocks may disagree by 100 ms"
        )]
    );

    // One made well inside the span is invented: nobody in the history
    // asked for it.
    sqlx::query("UPDATE orders SET created_at = $2 WHERE id = $1")
        .bind(early)
        .bind(sent_at + second)
        .execute(&app.pool)
        .await
        .unwrap();
    let finding = lost_order_finding(&app, &history).await;
    assert_eq!(finding.verdict, Verdict::Fail, "{finding:?}");
    assert_eq!(finding.offending, 1);
    assert!(
        finding.examples[0].starts_with(&format!("order {early}: user \"early\"")),
        "{finding:?}"
    );
    assert!(
        finding
            .detail
            .contains("; 1 order made outside the history"),
        "{finding:?}"
    );

    // A history too short to judge anything inside it: its whole span is
    // within the clocks' slack of one end or the other.
    let short: Vec<Attempt> = history
        .iter()
        .take(5)
        .map(|a| Attempt {
            finished_at: sent_at + millisecond * 150,
            ..a.clone()
        })
        .collect();
    let finding = lost_order_finding(&app, &short).await;
    assert_eq!(finding.verdict, Verdict::Unknown, "{finding:?}");
}

/// One request, timed on the client's clock as the storm times it.
async fn timed(app: &TestApp, event: i64, user: &str, key: &str, number: u64) -> Attempt {
    let sent_at = Utc::now();
    let answer = app.order(event, user, key, 1).await;
    let outcome = match (answer.status, answer.replayed, answer.code()) {
        (StatusCode::ACCEPTED, false, _) => Outcome::Accepted,
        (StatusCode::ACCEPTED, true, _) => Outcome::Replayed,
        (_, _, "sold_out") => Outcome::SoldOut,
        (_, _, "limit_exceeded") => Outcome::LimitExceeded,
        _ => Outcome::Rejected,
    };
    Attempt {
        sent_at,
        finished_at: Utc::now(),
        status: Some(answer.status.as_u16()),
        ..attempt(
            event,
            number,
            user,
            key,
            outcome,
            answer.order_id().parse().ok(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_each_client_was_told_agrees_with_itself() {
    let app = spawn_app().await;
    let event = app.create_event(2, 4).await;
    let mut history = Vec::new();
    for (number, (user, key)) in [
        ("ana", "a"),
        ("bo", "b"),
        ("ana", "a"),
        ("cy", "c"),
        ("bo", "b"),
    ]
    .into_iter()
    .enumerate()
    {
        history.push(timed(&app, event, user, key, number as u64).await);
    }
    let outcomes: Vec<Outcome> = history.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Accepted,
            Outcome::Accepted,
            Outcome::Replayed,
            Outcome::SoldOut,
            Outcome::Replayed
        ]
    );
    let truthful = invariants::no_lie_to_client(&history, None);
    assert_eq!(truthful.verdict, Verdict::Pass, "{truthful:?}");
    assert_eq!(truthful.checked, 3);

    // What a server with the replay bug would have said: bo's second click,
    // sent after his 202 arrived, told sold out...
    let mut lied = history.clone();
    lied[4].outcome = Outcome::SoldOut;
    lied[4].order_id = None;
    let finding = invariants::no_lie_to_client(&lied, None);
    assert_eq!(finding.verdict, Verdict::Fail);
    assert!(
        finding.examples[0].contains("\"bo\" key \"b\": told sold_out"),
        "{finding:?}"
    );
    // ...or ana's replay naming another order than her first answer.
    let mut lied = history.clone();
    lied[2].order_id = Some(Uuid::now_v7());
    let finding = invariants::no_lie_to_client(&lied, None);
    assert_eq!(finding.verdict, Verdict::Fail);
    assert!(
        finding.examples[0].contains("told of 2 different orders"),
        "{finding:?}"
    );
    // A refusal sent while the accepted twin was still in flight is no lie.
    let mut concurrent = history.clone();
    concurrent[4].outcome = Outcome::SoldOut;
    concurrent[4].order_id = None;
    concurrent[4].sent_at = concurrent[1].sent_at;
    let finding = invariants::no_lie_to_client(&concurrent, None);
    assert_eq!(finding.verdict, Verdict::Pass, "{finding:?}");
}

/// The seats each answer named are the seats its order holds: a writer that
/// gave an order other seats than it told the buyer is caught.
/// Every seat a buyer was told was taken was held, sold or on its way back
/// at the time: a "taken" for a seat past its return, or for a seat nobody
/// ever held, is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_told_taken_while_it_was_for_sale_fails_the_history() {
    let app = spawn_app().await;
    let event = app
        .create_seated_event(serde_json::json!("A:1x6@100"), 4)
        .await;
    let mut history = Vec::new();
    for (n, user) in ["ann", "bob"].into_iter().enumerate() {
        let sent_at = Utc::now();
        let answer = app
            .buy(event, user, "k", serde_json::json!({"seats": ["A-1-1"]}))
            .await;
        let (outcome, seats) = match answer.status {
            StatusCode::ACCEPTED => (Outcome::Accepted, &answer.body["seats"]),
            _ => (Outcome::SeatTaken, &answer.body["error"]["seats"]),
        };
        history.push(Attempt {
            sent_at,
            finished_at: Utc::now(),
            status: Some(answer.status.as_u16()),
            seats: Some(serde_json::from_value(seats.clone()).unwrap()),
            ..attempt(
                event,
                n as u64,
                user,
                "k",
                outcome,
                answer.order_id().parse().ok(),
            )
        });
    }
    assert_eq!(history[1].outcome, Outcome::SeatTaken, "{:?}", history[1]);
    let truthful = history_finding(&app, &history, Invariant::SeatTakenWasTrue).await;
    assert_eq!(
        (truthful.verdict, truthful.checked),
        (Verdict::Pass, 1),
        "{truthful:?}"
    );

    // Ann's order ends unpaid now: her seat is back on sale 5 s later.
    sqlx::query("UPDATE orders SET status = 'EXPIRED', updated_at = now() WHERE id = $1")
        .bind(history[0].order_id.unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    let told = |number: u64, user: &str, seats: Option<&[&str]>, after_ms: i64| {
        let at = Utc::now() + chrono::Duration::milliseconds(after_ms);
        Attempt {
            sent_at: at,
            finished_at: at,
            seats: seats.map(|s| s.iter().map(|s| s.to_string()).collect()),
            ..attempt(event, number, user, "k", Outcome::SeatTaken, None)
        }
    };
    let asked = |told: Attempt, seats: &[&str]| Attempt {
        asked_seats: Some(seats.iter().map(|s| s.to_string()).collect()),
        ..told
    };
    history.extend([
        told(2, "carol", Some(&["A-1-1"]), 3_000),
        told(3, "dave", Some(&["A-1-1"]), 6_000),
        told(4, "erin", Some(&["A-1-4"]), 0),
        told(5, "frank", None, 0),
        // Judged on what it asked for when the answer named nothing.
        asked(told(6, "gus", None, 3_000), &["A-1-1", "A-1-2"]),
        asked(told(7, "hal", None, 0), &["A-1-5", "A-1-6"]),
        // Named a seat it never asked for, though that seat was taken.
        asked(told(8, "ivy", Some(&["A-1-1"]), 0), &["A-1-3"]),
    ]);
    let lied = history_finding(&app, &history, Invariant::SeatTakenWasTrue).await;
    assert_eq!(lied.verdict, Verdict::Fail, "{lied:?}");
    assert_eq!(lied.examples.len(), 4, "{lied:?}");
    assert!(
        lied.examples[2].contains("user \"hal\" key \"k\": told a seat of A-1-5 A-1-6 was taken"),
        "no seat it asked for was held: {lied:?}"
    );
    assert!(
        lied.examples[3].contains(
            "user \"ivy\" key \"k\": told seat A-1-1 was taken, a seat it did not ask for"
        ),
        "{lied:?}"
    );
    assert!(
        lied.examples[0].contains("user \"dave\" key \"k\": told seat A-1-1 was taken"),
        "past the return delay: {lied:?}"
    );
    assert!(
        lied.examples[1].contains("user \"erin\" key \"k\": told seat A-1-4 was taken"),
        "a seat nobody held: {lied:?}"
    );
    assert!(
        lied.detail
            .contains("1 seat_taken answers named no seats and were not judged"),
        "{lied:?}"
    );
}
