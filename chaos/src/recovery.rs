//! Recovery after a fault, measured twice: the first answer that says
//! something definite about an order sent after the fault ended (buyers served
//! again), and the first moment no order has waited longer than
//! [`DRAINED_AGE`] to settle (the saga caught up). A fault has recovered when
//! both have happened.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use flashtix_model::history::Attempt;
use serde::Serialize;
use sqlx::PgPool;

use crate::windows::{seconds_since, Window};

/// The saga has caught up when no PENDING order is older than this.
pub const DRAINED_AGE: f64 = 2.0;
/// How often the backlog is looked at.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// One fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    pub fault: String,
    /// Seconds from the storm's start.
    pub from: f64,
    pub to: f64,
    /// Attempts sent inside the window, by outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Of them, answered 5xx, timed out or not connected.
    pub errors: u64,
    /// Requests sent after the window: none, and recovery cannot be measured.
    pub requests_after: u64,
    /// Seconds after the window until a definite answer to a request sent
    /// after it came back.
    pub served: Option<f64>,
    /// Seconds after the window until no order waited over [`DRAINED_AGE`].
    pub drained: Option<f64>,
    /// The later of the two: when the sale had recovered.
    pub recovered: Option<f64>,
}

/// What the storm saw inside `window` and after it, and when the backlog
/// drained; `zero` is the storm's start.
pub fn measure(
    window: &Window,
    zero: DateTime<Utc>,
    attempts: &[Attempt],
    samples: &[Sample],
) -> FaultReport {
    let to = window.until(window.from);
    let at = |t: DateTime<Utc>| seconds_since(zero, t);
    let after = |t: f64| (t - to).max(0.0);
    let mut outcomes = BTreeMap::new();
    let mut errors = 0;
    for attempt in attempts {
        let sent = at(attempt.sent_at);
        if sent >= window.from && sent <= to {
            *outcomes
                .entry(attempt.outcome.name().to_owned())
                .or_insert(0) += 1;
            errors += u64::from(!attempt.outcome.is_definite());
        }
    }
    // Buyers served again: the first definite answer to a request sent after
    // the window. No request after it (the storm had ended): not measured.
    let sent_after: Vec<&Attempt> = attempts.iter().filter(|a| at(a.sent_at) >= to).collect();
    let served = sent_after
        .iter()
        .filter(|a| a.outcome.is_definite())
        .map(|a| at(a.finished_at))
        .min_by(f64::total_cmp)
        .map(after);
    let drained = samples
        .iter()
        .map(|(t, age)| (at(*t), age))
        .find(|(t, age)| *t >= to && matches!(age, Some(age) if *age <= DRAINED_AGE))
        .map(|(t, _)| after(t));
    let recovered = match (served, drained) {
        (Some(s), Some(d)) => Some(s.max(d)),
        _ => None,
    };
    FaultReport {
        fault: window.label.clone(),
        from: window.from,
        to,
        outcomes,
        errors,
        requests_after: sent_after.len() as u64,
        served,
        drained,
        recovered,
    }
}

/// When the backlog was looked at, and the age of its oldest PENDING order
/// in seconds (`None`: Postgres did not answer).
pub type Sample = (DateTime<Utc>, Option<f64>);

/// Looks at the age of the oldest PENDING order every `SAMPLE_EVERY` until
/// stopped.
pub struct Backlog {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Backlog {
    pub fn watch(pool: PgPool, namespace: &str) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let into = samples.clone();
        let query = format!(
            "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0)
             FROM {namespace}.orders WHERE status = 'PENDING'"
        );
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                let age = tokio::time::timeout(
                    SAMPLE_EVERY * 4,
                    sqlx::query_scalar::<_, f64>(&query).fetch_one(&pool),
                )
                .await
                .ok()
                .and_then(Result::ok);
                into.lock().expect("not poisoned").push((Utc::now(), age));
            }
        });
        Self { samples, task }
    }

    /// Stops looking; what it saw.
    pub fn stop(self) -> Vec<Sample> {
        self.task.abort();
        std::mem::take(&mut *self.samples.lock().expect("not poisoned"))
    }
}

#[cfg(test)]
mod tests {
    use flashtix_model::history::Outcome;

    use super::*;

    fn at(seconds: f64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + (seconds * 1000.0) as i64).unwrap()
    }

    fn attempt(sent: f64, finished: f64, outcome: Outcome) -> Attempt {
        Attempt {
            attempt: 1,
            event_id: 1,
            user_id: "u".into(),
            idempotency_key: "k".into(),
            quantity: 1,
            sent_at: at(sent),
            finished_at: at(finished),
            outcome,
            status: None,
            order_id: None,
            seats: None,
            asked_seats: None,
            asked_zone: None,
            amount_cents: None,
        }
    }

    fn window(from: f64, to: f64) -> Window {
        Window {
            label: "kill payments".into(),
            from,
            to: Some(to),
        }
    }

    /// Buyers are served again at the first *definite* answer after the
    /// fault: a `request_in_progress` says nothing about the order, so it
    /// neither ends the outage nor counts as served.
    #[test]
    fn an_answer_in_progress_is_not_service_again() {
        let attempts = [
            attempt(1.5, 1.6, Outcome::InProgress),
            attempt(1.6, 1.7, Outcome::Accepted),
            attempt(2.1, 2.2, Outcome::InProgress),
            attempt(2.3, 3.5, Outcome::Replayed),
        ];
        let report = measure(&window(1.0, 2.0), at(0.0), &attempts, &[]);
        assert_eq!(report.errors, 1, "in the window, in_progress is unknown");
        assert_eq!(
            report.served,
            Some(1.5),
            "served at the replay, not at 2.2 s"
        );
    }

    /// Only requests sent after the window tell of recovery: an answer to
    /// one sent inside it, however late it came, does not; and with none
    /// sent after (a fault that lasted to the storm's end) there is no
    /// recovery figure at all, not an instant one.
    #[test]
    fn recovery_is_measured_only_from_requests_sent_after_the_window() {
        let drained = [(at(5.5), Some(0.0))];
        let slow_inside = [
            attempt(1.5, 5.2, Outcome::Accepted),
            attempt(5.4, 5.6, Outcome::Accepted),
        ];
        let report = measure(&window(1.0, 5.0), at(0.0), &slow_inside, &drained);
        assert_eq!(report.requests_after, 1);
        assert_eq!(
            report.served.map(|s| (s * 10.0).round()),
            Some(6.0),
            "at 5.6 s"
        );

        let to_the_end = [attempt(1.5, 1.6, Outcome::Accepted)];
        let report = measure(&window(1.0, 5.0), at(0.0), &to_the_end, &drained);
        assert_eq!(
            (report.requests_after, report.served, report.recovered),
            (0, None, None)
        );
    }

    #[test]
    fn recovery_is_the_later_of_buyers_served_and_the_backlog_drained() {
        let attempts = [
            attempt(1.0, 1.1, Outcome::Accepted),
            attempt(2.5, 5.5, Outcome::Timeout),
            attempt(3.0, 3.1, Outcome::Error),
            attempt(4.0, 4.1, Outcome::Accepted),
            // After the window: the first one still fails, the next is served.
            attempt(5.1, 5.2, Outcome::Error),
            attempt(5.3, 6.0, Outcome::SoldOut),
        ];
        let samples = [
            (at(4.0), Some(3.0)),
            (at(5.5), None),
            (at(6.5), Some(2.5)),
            (at(7.5), Some(1.0)),
        ];
        let window = window(2.0, 5.0);
        let report = measure(&window, at(0.0), &attempts, &samples);
        assert_eq!((report.from, report.to), (2.0, 5.0));
        assert_eq!(report.errors, 2, "the timeout and the 5xx sent inside");
        assert_eq!(report.outcomes["accepted"], 1);
        assert_eq!(report.served, Some(1.0), "the sold-out answer at 6.0");
        assert_eq!(report.drained, Some(2.5), "oldest PENDING 1 s old at 7.5");
        assert_eq!(report.recovered, Some(2.5));

        let never_drained = measure(&window, at(0.0), &attempts, &samples[..3]);
        assert_eq!(never_drained.recovered, None);
    }
}
