//! Prometheus metrics, kept in atomics and rendered as text on `GET /metrics`.
//! Names are `flashtix_*` with their unit in the name.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub enum OrderOutcome {
    Accepted,
    Replayed,
    SoldOut,
    LimitExceeded,
    Rejected,
    Unavailable,
}

const OUTCOMES: [(OrderOutcome, &str); 6] = [
    (OrderOutcome::Accepted, "accepted"),
    (OrderOutcome::Replayed, "replayed"),
    (OrderOutcome::SoldOut, "sold_out"),
    (OrderOutcome::LimitExceeded, "limit_exceeded"),
    (OrderOutcome::Rejected, "rejected"),
    (OrderOutcome::Unavailable, "unavailable"),
];

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

pub struct Metrics {
    orders: [AtomicU64; OUTCOMES.len()],
    batched_orders: AtomicU64,
    batch_seconds: Histogram,
    settle_seconds: Histogram,
    /// Payment outcome (SUCCEEDED, FAILED) → captures recorded.
    payments: Mutex<BTreeMap<&'static str, u64>>,
    redis_bypasses: AtomicU64,
    sold_out_from_memory: AtomicU64,
    reseeds: AtomicU64,
    holds_reclaimed: AtomicU64,
    stock_repairs: AtomicU64,
    orders_expired: AtomicU64,
    outbox_published: AtomicU64,
    /// (consumer, outcome) → messages.
    messages: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    stock_returns: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            orders: Default::default(),
            batched_orders: AtomicU64::new(0),
            batch_seconds: Histogram::new(COMMIT_BUCKETS),
            settle_seconds: Histogram::new(SETTLE_BUCKETS),
            payments: Mutex::default(),
            redis_bypasses: AtomicU64::new(0),
            sold_out_from_memory: AtomicU64::new(0),
            reseeds: AtomicU64::new(0),
            holds_reclaimed: AtomicU64::new(0),
            stock_repairs: AtomicU64::new(0),
            orders_expired: AtomicU64::new(0),
            outbox_published: AtomicU64::new(0),
            messages: Mutex::default(),
            stock_returns: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn record_order(&self, outcome: OrderOutcome) {
        self.orders[outcome as usize].fetch_add(1, Relaxed);
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
        let mut payments = self.payments.lock().unwrap_or_else(|p| p.into_inner());
        *payments.entry(outcome).or_default() += 1;
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

    pub fn message_handled(&self, consumer: &'static str, handled: &crate::consumer::Handled) {
        use crate::consumer::Handled;
        let outcome = match handled {
            Handled::Done => "done",
            Handled::Duplicate => "duplicate",
            Handled::Retry(_) => "retry",
            Handled::Poison(_) => "poison",
        };
        let mut messages = self.messages.lock().unwrap_or_else(|p| p.into_inner());
        *messages.entry((consumer, outcome)).or_default() += 1;
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
        let _ = writeln!(out, "# HELP flashtix_orders_total Buy requests by outcome.\n# TYPE flashtix_orders_total counter");
        for (outcome, label) in OUTCOMES {
            let _ = writeln!(
                out,
                "flashtix_orders_total{{outcome=\"{label}\"}} {}",
                self.orders[outcome as usize].load(Relaxed)
            );
        }
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
        let _ = writeln!(out, "# HELP flashtix_payments_total Captures recorded, by outcome.\n# TYPE flashtix_payments_total counter");
        for (outcome, count) in self
            .payments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "flashtix_payments_total{{outcome=\"{outcome}\"}} {count}"
            );
        }
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
        let _ = writeln!(out, "# HELP flashtix_messages_total Messages handled by consumer and outcome.\n# TYPE flashtix_messages_total counter");
        for ((consumer, outcome), count) in self
            .messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "flashtix_messages_total{{consumer=\"{consumer}\",outcome=\"{outcome}\"}} {count}"
            );
        }
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
        metrics.record_order(OrderOutcome::SoldOut);
        metrics.record_order(OrderOutcome::SoldOut);
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
