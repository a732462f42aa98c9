//! Reserved seating: seats sold one by one, never twice, all or nothing;
//! zones sold by count; a bad choice refused and nothing changed.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use flashtix_server::orders::seat_board::SEAT_RETURN_DELAY;

use crate::helpers::{count, eventually, spawn_app, TestApp};

fn seats(answer: &Value) -> Vec<String> {
    answer["seats"]
        .as_array()
        .map(|seats| {
            seats
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `count` buyers, each with a key of their own, all naming `seat`.
fn fans_naming(seat: &str, count: usize) -> Vec<(String, String, Value)> {
    (0..count)
        .map(|i| {
            (
                format!("fan-{i}"),
                format!("k-{i}"),
                json!({"seats": [seat]}),
            )
        })
        .collect()
}

/// The seat map's rows of one zone.
async fn rows(app: &TestApp, event: i64, zone: &str) -> Vec<String> {
    let map = app.get_json(&format!("/events/{event}/seats")).await;
    let zone = map["zones"]
        .as_array()
        .unwrap()
        .iter()
        .find(|z| z["name"] == zone)
        .unwrap()
        .clone();
    zone["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seat_three_hundred_buyers_one_wins() {
    let app = spawn_app().await;
    let event = app.create_seated_event(json!("A:1x10@5000"), 4).await;
    let buys = fans_naming("A-1-5", 300);

    let answers = app.buy_all(event, buys).await;

    let won: Vec<&Value> = answers
        .iter()
        .filter(|a| a.status == StatusCode::ACCEPTED)
        .map(|a| &a.body)
        .collect();
    assert_eq!(won.len(), 1, "exactly one buyer gets the seat");
    assert_eq!(seats(won[0]), ["A-1-5"]);
    assert_eq!(won[0]["amount_cents"], 5000);
    assert_eq!(count(&answers, StatusCode::CONFLICT, "seat_taken"), 299);
    for lost in answers.iter().filter(|a| a.code() == "seat_taken") {
        assert_eq!(
            lost.body["error"]["seats"],
            json!(["A-1-5"]),
            "{:?}",
            lost.body
        );
    }
    assert_eq!(rows(&app, event, "A").await, ["....h....."]);
    app.check_passes_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_gets_all_its_seats_or_none() {
    let app = spawn_app().await;
    let event = app.create_seated_event(json!("A:1x30@1000"), 6).await;
    // Overlapping groups of three: fan i wants seats i+1..=i+3, twice over.
    let buys = (0..56)
        .map(|i| {
            let first = i % 28 + 1;
            let group: Vec<String> = (first..first + 3).map(|n| format!("A-1-{n}")).collect();
            (
                format!("fan-{i}"),
                format!("k-{i}"),
                json!({"seats": group}),
            )
        })
        .collect::<Vec<_>>();
    let asked: Vec<Vec<String>> = buys.iter().map(|(_, _, what)| seats(what)).collect();

    let answers = app.buy_all(event, buys).await;

    let mut owner: HashMap<String, usize> = HashMap::new();
    let mut said_taken = Vec::new();
    for (i, answer) in answers.iter().enumerate() {
        match answer.status {
            StatusCode::ACCEPTED => {
                assert_eq!(seats(&answer.body), asked[i], "all three, as asked");
                for seat in &asked[i] {
                    assert_eq!(owner.insert(seat.clone(), i), None, "{seat} sold twice");
                }
            }
            StatusCode::CONFLICT => {
                assert_eq!(answer.code(), "seat_taken", "{:?}", answer.body);
                let gone = seats(&answer.body["error"]);
                assert!(!gone.is_empty() && gone.iter().all(|s| asked[i].contains(s)));
                said_taken.extend(gone);
            }
            other => panic!("fan {i}: {other} {:?}", answer.body),
        }
    }
    // However the races went, no two groups left fit beside the sold ones
    // (at worst six groups, two seats apart), and a seat called taken was sold.
    assert!(
        owner.len() >= 3 * 6,
        "at least six groups fit: {}",
        owner.len()
    );
    for seat in &said_taken {
        assert!(
            owner.contains_key(seat),
            "{seat} was called taken but was not sold"
        );
    }
    let row = rows(&app, event, "A").await.concat();
    let held: HashSet<String> = row
        .char_indices()
        .filter(|(_, state)| *state == 'h')
        .map(|(n, _)| format!("A-1-{}", n + 1))
        .collect();
    assert_eq!(
        held,
        owner.keys().cloned().collect(),
        "the map holds exactly the sold seats"
    );
    app.check_passes_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zones_sell_the_best_seats_together_and_standing_by_count() {
    let app = spawn_app().await;
    let plan = json!({"zones": [
        {"name": "A", "price_cents": 9000, "rows": [4, 4], "blocked": ["A-1-4"]},
        {"name": "GA", "price_cents": 3000, "capacity": 3},
    ]});
    let event = app.create_seated_event(plan, 6).await;
    assert_eq!(app.event(event).await.total_tickets, 7 + 3);

    let front = app
        .buy(event, "ann", "k1", json!({"zone": "A", "quantity": 3}))
        .await;
    assert_eq!(front.status, StatusCode::ACCEPTED, "{:?}", front.body);
    assert_eq!(seats(&front.body), ["A-1-1", "A-1-2", "A-1-3"]);
    assert_eq!(front.body["amount_cents"], 27000);
    let pair = app
        .buy(event, "bob", "k1", json!({"zone": "A", "quantity": 2}))
        .await;
    assert_eq!(
        seats(&pair.body),
        ["A-2-1", "A-2-2"],
        "row 1 is full: side by side in row 2"
    );
    let standing = app.buy(event, "cat", "k1", json!({"quantity": 2})).await;
    assert_eq!(standing.status, StatusCode::ACCEPTED);
    assert_eq!(standing.body["zone"], "GA", "a count alone buys standing");
    assert_eq!(standing.body["amount_cents"], 6000);
    let too_many = app
        .buy(event, "dan", "k1", json!({"zone": "GA", "quantity": 2}))
        .await;
    assert_eq!(too_many.code(), "zone_sold_out", "one standing place left");
    assert_eq!(
        too_many.body["error"]["zone"], "GA",
        "the zone, for a program"
    );
    assert!(
        too_many.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("zone GA"),
        "{:?}",
        too_many.body
    );
    let last = app
        .buy(event, "dan", "k2", json!({"zone": "GA", "quantity": 1}))
        .await;
    assert_eq!(last.status, StatusCode::ACCEPTED);
    let replay = app
        .buy(event, "ann", "k1", json!({"zone": "A", "quantity": 3}))
        .await;
    assert!(replay.replayed);
    assert_eq!(
        seats(&replay.body),
        ["A-1-1", "A-1-2", "A-1-3"],
        "a replay names the same seats"
    );

    let map = app.get_json(&format!("/events/{event}/seats")).await;
    assert_eq!(map["zones"][0]["rows"], json!(["hhhx", "hh.."]));
    assert_eq!(
        (&map["zones"][0]["held"], &map["zones"][0]["available"]),
        (&json!(5), &json!(2))
    );
    assert_eq!(
        (&map["zones"][1]["held"], &map["zones"][1]["available"]),
        (&json!(3), &json!(0))
    );
    app.check_passes_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_seat_requests_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let plan = json!({"zones": [
        {"name": "A", "price_cents": 9000, "rows": 2, "seats_per_row": 3, "blocked": ["A-1-1"]},
        {"name": "B", "price_cents": 5000, "capacity": 10},
        {"name": "C", "price_cents": 4000, "capacity": 10},
    ]});
    let event = app.create_seated_event(plan, 4).await;
    let plain = app.create_event(10, 4).await;

    for (what, status, code, says) in [
        (
            json!({"seats": ["A-9-1", "A-1-2", "Z-1-1"]}),
            422,
            "unknown_seat",
            "A-9-1, Z-1-1",
        ),
        (
            json!({"seats": ["A-1-1", "A-1-2"]}),
            422,
            "seat_blocked",
            "A-1-1",
        ),
        (
            json!({"seats": ["A-1-2", "A-1-2"]}),
            422,
            "invalid_request",
            "named twice",
        ),
        (
            json!({"seats": ["A-1-2"], "quantity": 1}),
            422,
            "invalid_request",
            "not both",
        ),
        (
            json!({"zone": "Q", "quantity": 1}),
            422,
            "invalid_request",
            "no zone \"Q\"",
        ),
        (
            json!({"quantity": 1}),
            422,
            "invalid_request",
            "name the seats or a zone",
        ),
        (
            json!({"seats": ["A-1-2", "A-1-3", "A-2-1", "A-2-2", "A-2-3"]}),
            422,
            "invalid_request",
            "limit",
        ),
    ] {
        let answer = app.buy(event, "ann", "k", what.clone()).await;
        assert_eq!(answer.status.as_u16(), status, "{what}: {:?}", answer.body);
        assert_eq!(answer.code(), code, "{what}");
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{what}: {message}");
    }
    let on_plain = app
        .buy(plain, "ann", "k", json!({"seats": ["A-1-2"]}))
        .await;
    assert_eq!(on_plain.code(), "invalid_request");
    assert!(on_plain.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no seating plan"));

    assert_eq!(app.order_count().await, 0, "nothing was ordered");
    assert_eq!(rows(&app, event, "A").await, ["x..", "..."]);
    let stock = app.event(event).await;
    assert_eq!(stock.available_tickets, stock.total_tickets);
    // The key was never used: the same key buys a good seat now.
    let good = app
        .buy(event, "ann", "k", json!({"seats": ["A-1-2"]}))
        .await;
    assert_eq!(good.status, StatusCode::ACCEPTED, "{:?}", good.body);
    app.check_passes_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_order_frees_its_seats_for_the_next_buyer_after_the_return_delay() {
    let app = spawn_app().await;
    let delay: f64 = sqlx::query_scalar("SELECT extract(epoch FROM seat_return_delay())::float8")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        Duration::from_secs_f64(delay),
        SEAT_RETURN_DELAY,
        "the database's delay is the one the taken-seat board is sized by"
    );
    let plan = json!({"zones": [{"name": "A", "price_cents": 100, "rows": 1, "seats_per_row": 2}]});
    let event = app
        .create_event_from(json!({"name": "Short hold", "seating": plan, "hold_seconds": 1}))
        .await;
    let first = app
        .buy(event, "ann", "k", json!({"seats": ["A-1-1", "A-1-2"]}))
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(
        app.buy(event, "bob", "k", json!({"seats": ["A-1-2"]}))
            .await
            .code(),
        "seat_taken"
    );

    eventually(Duration::from_secs(20), || async {
        let order = app.order_of(&first).await;
        if order["status"] == "PENDING" {
            return Err(format!("{order}"));
        }
        Ok(())
    })
    .await;
    let coming_back: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM min(free_from) - now())::float8 FROM seats WHERE event_id = $1",
    )
    .bind(event)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        coming_back > 0.0,
        "unpaid: the seats are not on sale again at once ({coming_back} s)"
    );
    assert_eq!(rows(&app, event, "A").await, ["rr"], "coming back");
    let map = app.get_json(&format!("/events/{event}/seats")).await;
    assert_eq!(
        (
            &map["zones"][0]["returning"],
            &map["zones"][0]["held"],
            &map["zones"][0]["available"]
        ),
        (&json!(2), &json!(0), &json!(0)),
        "returning seats are neither held nor for sale"
    );
    let second = eventually(Duration::from_secs(20), || async {
        let answer = app
            .buy(event, "bob", "k2", json!({"seats": ["A-1-2"]}))
            .await;
        match answer.status {
            StatusCode::ACCEPTED => Ok(answer),
            _ => Err(format!("{:?}", answer.body)),
        }
    })
    .await;
    assert_eq!(seats(&second.body), ["A-1-2"]);
    assert_eq!(rows(&app, event, "A").await, [".h"]);
    app.check_passes_within(Duration::from_secs(10)).await;
}

/// Once the writer has seen a seat owned, buyers naming it are told it is
/// taken from memory; its owner's replay still gets the order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_seen_taken_is_refused_from_memory_and_its_owner_still_replays() {
    let app = spawn_app().await;
    let event = app.create_seated_event(json!("A:1x10@5000"), 4).await;
    let owner = app
        .buy(event, "ann", "k", json!({"seats": ["A-1-5"]}))
        .await;
    assert_eq!(owner.status, StatusCode::ACCEPTED);

    let buys = fans_naming("A-1-5", 200);
    let answers = app.buy_all(event, buys).await;
    assert_eq!(count(&answers, StatusCode::CONFLICT, "seat_taken"), 200);
    assert!(
        app.metric("flashtix_seat_taken_from_memory_total").await > 0,
        "the board answered some"
    );

    let replay = app
        .buy(event, "ann", "k", json!({"seats": ["A-1-5"]}))
        .await;
    assert_eq!(
        (replay.status, replay.replayed),
        (StatusCode::ACCEPTED, true),
        "{:?}",
        replay.body
    );
    assert_eq!(replay.order_id(), owner.order_id());
    let group = app
        .buy(event, "cy", "k", json!({"seats": ["A-1-5", "A-1-6"]}))
        .await;
    assert_eq!(group.code(), "seat_taken", "{:?}", group.body);
    assert_eq!(
        group.body["error"]["seats"],
        json!(["A-1-5"]),
        "a seat the board does not know goes to Postgres, which names exactly the gone ones"
    );
    app.check_passes_within(Duration::from_secs(10)).await;
}

/// Named seats and a zone's best seats in the same batches: a seat picked
/// for one is gone for the other, and nobody is told the sale is unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_seats_and_best_available_race_for_the_same_seats() {
    let app = spawn_app().await;
    let event = app.create_seated_event(json!("A:1x40@100"), 4).await;
    // Seat n named by one fan, while as many ask for the best seat left
    // (the lowest numbers first).
    let buys = (0..60)
        .map(|i| {
            let what = if i % 2 == 0 {
                json!({"zone": "A", "quantity": 1})
            } else {
                json!({"seats": [format!("A-1-{}", i / 2 + 1)]})
            };
            (format!("fan-{i}"), format!("k-{i}"), what)
        })
        .collect();

    let answers = app.buy_all(event, buys).await;

    let mut sold = HashSet::new();
    for answer in &answers {
        match answer.status {
            StatusCode::ACCEPTED => {
                for seat in seats(&answer.body) {
                    assert!(sold.insert(seat.clone()), "{seat} sold twice");
                }
            }
            _ => assert!(
                ["seat_taken", "sold_out", "zone_sold_out"].contains(&answer.code()),
                "{} {:?}",
                answer.status,
                answer.body
            ),
        }
    }
    if answers
        .iter()
        .any(|a| ["sold_out", "zone_sold_out"].contains(&a.code()))
    {
        assert_eq!(sold.len(), 40, "sold out only once every seat was sold");
    }
    app.check_passes_within(Duration::from_secs(10)).await;
}

/// Named seats at the front of a batch do not use up the seats the writer
/// reads for the zone's best-available tickets: a fan asking for the best
/// seat left is never told `sold_out` while seats are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_seats_leave_the_best_available_their_seats() {
    let app = spawn_app().await;
    let event = app.create_seated_event(json!("A:1x200@100"), 4).await;
    let named = (1..=150).map(|n| {
        (
            format!("named-{n}"),
            format!("k-{n}"),
            json!({"seats": [format!("A-1-{n}")]}),
        )
    });
    let best = (0..20).map(|i| {
        (
            format!("best-{i}"),
            format!("k-{i}"),
            json!({"zone": "A", "quantity": 1}),
        )
    });
    let answers = app.buy_all(event, named.chain(best).collect()).await;

    for (i, answer) in answers[150..].iter().enumerate() {
        assert_eq!(
            answer.status,
            StatusCode::ACCEPTED,
            "best-{i}: {:?}",
            answer.body
        );
    }
    app.check_passes_within(Duration::from_secs(10)).await;
}
