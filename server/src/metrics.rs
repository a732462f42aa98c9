//! Prometheus metrics, kept in atomics and rendered as text on `GET /metrics`.
//! Names are `flashtix_*` with their unit in the name.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the batch commit histogram, in seconds.
const COMMIT_BUCKETS: &[f64] = &[0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0];
/// Upper bounds of the order-to-settled histogram, in seconds.
const SETTLE_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// A Prometheus histogram of durations with fixed buckets.
struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, took: Duration) {
        self.count.fetch_add(1, Relaxed);
        self.micros.fetch_add(took.as_micros() as u64, Relaxed);
        let seconds = took.as_secs_f64();
        if let Some(bucket) = self.bounds.iter().position(|bound| seconds <= *bound) {
            self.buckets[bucket].fetch_add(1, Relaxed);
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.buckets) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let total = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum {}", self.micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {total}");
    }
}

/// A counter with one label: label values → counts, exported as they appear.
#[derive(Default)]
struct Labelled<K: Ord>(Mutex<BTreeMap<K, u64>>);

impl<K: Ord> Labelled<K> {
    /// Exports `keys` at zero until they are first counted.
    fn declare(&self, keys: impl IntoIterator<Item = K>) {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            counts.entry(key).or_default();
        }
    }

    fn add(&self, key: K) {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(key).or_default() += 1;
    }

    /// Writes the family; `labels` turns a key into `name="value",…`.
    fn render(&self, out: &mut String, name: &str, help: &str, labels: impl Fn(&K) -> String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (key, count) in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "{name}{{{}}} {count}", labels(key));
        }
    }
}

pub struct Metrics {
    /// Buy requests by the label of their answer.
    orders: Labelled<&'static str>,
    batched_orders: AtomicU64,
    batch_seconds: Histogram,
    settle_seconds: Histogram,
    /// Payment outcome (SUCCEEDED, FAILED) → captures recorded.
    payments: Labelled<&'static str>,
    redis_bypasses: AtomicU64,
    sold_out_from_memory: AtomicU64,
    reseeds: AtomicU64,
    holds_reclaimed: AtomicU64,
    stock_repairs: AtomicU64,
    orders_expired: AtomicU64,
    outbox_published: AtomicU64,
    /// (consumer, outcome) → messages.
    messages: Labelled<(&'static str, &'static str)>,
    stock_returns: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            orders: Default::default(),
            batched_orders: AtomicU64::new(0),
            batch_seconds: Histogram::new(COMMIT_BUCKETS),
            settle_seconds: Histogram::new(SETTLE_BUCKETS),
            payments: Labelled::default(),
            redis_bypasses: AtomicU64::new(0),
            sold_out_from_memory: AtomicU64::new(0),
            reseeds: AtomicU64::new(0),
            holds_reclaimed: AtomicU64::new(0),
            stock_repairs: AtomicU64::new(0),
            orders_expired: AtomicU64::new(0),
            outbox_published: AtomicU64::new(0),
            messages: Labelled::default(),
            stock_returns: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// A buy request answered; `label` is the answer's (see
    /// [`crate::orders::Placed::label`] and [`crate::orders::PlaceError::label`]).
    /// The labels buy requests can be answered with, exported from the start.
    pub fn declare_orders(&self, labels: &[&'static str]) {
        self.orders.declare(labels.iter().copied());
    }

    pub fn record_order(&self, label: &'static str) {
        self.orders.add(label);
    }

    pub fn record_batch(&self, size: usize, took: Duration) {
        self.batched_orders.fetch_add(size as u64, Relaxed);
        self.batch_seconds.observe(took);
    }

    /// An order reached CONFIRMED or CANCELLED `took` after it was accepted.
    pub fn order_settled(&self, took: Duration) {
        self.settle_seconds.observe(took);
    }

    pub fn payment_recorded(&self, outcome: &'static str) {
        self.payments.add(outcome);
    }

    pub fn redis_bypass(&self) {
        self.redis_bypasses.fetch_add(1, Relaxed);
    }

    pub fn sold_out_from_memory(&self) {
        self.sold_out_from_memory.fetch_add(1, Relaxed);
    }

    pub fn reseeded(&self) {
        self.reseeds.fetch_add(1, Relaxed);
    }

    pub fn holds_reclaimed(&self, count: u64) {
        self.holds_reclaimed.fetch_add(count, Relaxed);
    }

    pub fn orders_expired(&self, count: u64) {
        self.orders_expired.fetch_add(count, Relaxed);
    }

    /// A message handled by `consumer`, labelled by how (see
    /// [`crate::consumer::Handled::label`]).
    pub fn message_handled(&self, consumer: &'static str, outcome: &'static str) {
        self.messages.add((consumer, outcome));
    }

    pub fn outbox_published(&self, count: u64) {
        self.outbox_published.fetch_add(count, Relaxed);
    }

    pub fn stock_returned(&self, count: u64) {
        self.stock_returns.fetch_add(count, Relaxed);
    }

    pub fn stock_repaired(&self) {
        self.stock_repairs.fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Relaxed)
            );
        };
        self.orders.render(
            &mut out,
            "flashtix_orders_total",
            "Buy requests by outcome.",
            |outcome| format!("outcome=\"{outcome}\""),
        );
        counter(
            &mut out,
            "flashtix_order_batch_orders_total",
            "Reservations settled in batches.",
            &self.batched_orders,
        );
        self.batch_seconds.render(
            &mut out,
            "flashtix_order_batch_seconds",
            "Time to settle one order batch.",
        );
        self.settle_seconds.render(
            &mut out,
            "flashtix_order_settle_seconds",
            "Time from an order's acceptance to CONFIRMED or CANCELLED.",
        );
        self.payments.render(
            &mut out,
            "flashtix_payments_total",
            "Captures recorded, by outcome.",
            |outcome| format!("outcome=\"{outcome}\""),
        );
        counter(
            &mut out,
            "flashtix_redis_bypass_total",
            "Orders sent straight to Postgres because Redis failed.",
            &self.redis_bypasses,
        );
        counter(
            &mut out,
            "flashtix_sold_out_from_memory_total",
            "Sold-out answers given without asking Redis.",
            &self.sold_out_from_memory,
        );
        counter(
            &mut out,
            "flashtix_outbox_published_total",
            "Outbox messages published to RabbitMQ and confirmed.",
            &self.outbox_published,
        );
        self.messages.render(
            &mut out,
            "flashtix_messages_total",
            "Messages handled by consumer and outcome.",
            |(consumer, outcome)| format!("consumer=\"{consumer}\",outcome=\"{outcome}\""),
        );
        counter(
            &mut out,
            "flashtix_orders_expired_total",
            "Unpaid orders expired by the sweeper.",
            &self.orders_expired,
        );
        counter(
            &mut out,
            "flashtix_stock_returns_applied_total",
            "Stock returns given back to Redis.",
            &self.stock_returns,
        );
        counter(
            &mut out,
            "flashtix_redis_reseeds_total",
            "Events reseeded into Redis from Postgres.",
            &self.reseeds,
        );
        counter(
            &mut out,
            "flashtix_holds_reclaimed_total",
            "Stale Redis holds confirmed or released by the reconciler.",
            &self.holds_reclaimed,
        );
        counter(
            &mut out,
            "flashtix_stock_repairs_total",
            "Redis stock corrected to match Postgres.",
            &self.stock_repairs,
        );
        out
    }
}

/// Appends one gauge in the Prometheus text format.
pub fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let metrics = Metrics::default();
        metrics.record_order("sold_out");
        metrics.record_order("sold_out");
        metrics.record_batch(10, Duration::from_millis(3));
        metrics.record_batch(5, Duration::from_millis(30));
        metrics.sold_out_from_memory();
        metrics.order_settled(Duration::from_millis(700));
        metrics.payment_recorded("SUCCEEDED");
        let text = metrics.render();
        assert!(text.contains("flashtix_orders_total{outcome=\"sold_out\"} 2"));
        assert!(text.contains("flashtix_order_batch_orders_total 15"));
        assert!(text.contains("flashtix_order_batch_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("flashtix_order_batch_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("flashtix_order_batch_seconds_count 2"));
        assert!(text.contains("flashtix_sold_out_from_memory_total 1"));
        assert!(text.contains("flashtix_order_settle_seconds_bucket{le=\"0.5\"} 0"));
        assert!(text.contains("flashtix_order_settle_seconds_bucket{le=\"1\"} 1"));
        assert!(text.contains("flashtix_payments_total{outcome=\"SUCCEEDED\"} 1"));
    }
}
