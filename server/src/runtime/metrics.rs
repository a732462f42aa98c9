//! Prometheus metrics on `GET /metrics`, kept by the `prometheus-client`
//! crate and exposed in the OpenMetrics text format. Names are `flashtix_*`
//! with their unit in the name.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry, Unit};

/// Upper bounds of the batch commit histogram, in seconds.
const COMMIT_BUCKETS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0];
/// Upper bounds of the order-to-settled histogram, in seconds.
const SETTLE_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
/// Upper bounds of the HTTP request histogram, in seconds: from a sold-out
/// answer from memory (tens of µs) to a request that waited on a slow
/// dependency.
const HTTP_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Message {
    consumer: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Notice {
    /// `mail` or `webhook`.
    channel: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Delivery {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    /// The route's pattern (`/orders/{id}`), not the path: one series a route.
    route: String,
    method: String,
    status: u16,
}

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    /// Buy requests by the label of their answer.
    orders: Family<Outcome, Counter>,
    batched_orders: Counter,
    batch_seconds: Histogram,
    settle_seconds: Histogram,
    /// Payment outcome (SUCCEEDED, FAILED) → captures recorded.
    payments: Family<Outcome, Counter>,
    redis_bypasses: Counter,
    sold_out_from_memory: Counter,
    seat_taken_from_memory: Counter,
    reseeds: Counter,
    holds_reclaimed: Counter,
    stock_repairs: Counter,
    orders_expired: Counter,
    outbox_published: Counter,
    messages: Family<Message, Counter>,
    stock_returns: Counter,
    requests: Family<Request, Histogram, fn() -> Histogram>,
    outbox_depth: Gauge,
    orders_pending: Gauge,
    oldest_pending: Gauge<f64, AtomicU64>,
    writer_lanes: Gauge,
    writer_lanes_started: Counter,
    buyers_rate_limited: Counter,
    stream_clients: Gauge,
    stream_messages: Counter,
    stream_clients_dropped: Counter,
    stream_interval: Gauge<f64, AtomicU64>,
    notices: Family<Notice, Counter>,
    notice_seconds: Histogram,
    webhook_deliveries: Family<Delivery, Gauge>,
}

impl Default for Metrics {
    // Long: a table, one entry per metric with its name and help, in the
    // order they are exported; cut up, it would only be harder to scan.
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flashtix");
        registry.register(
            "build",
            "The flashtix version serving",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let r = &mut registry;
        Self {
            orders: register(r, "orders", "Buy requests by outcome", Family::default()),
            batched_orders: register(
                r,
                "order_batch_orders",
                "Reservations settled in batches",
                Counter::default(),
            ),
            batch_seconds: register_seconds(
                r,
                "order_batch",
                "Time to settle one order batch",
                Histogram::new(COMMIT_BUCKETS),
            ),
            settle_seconds: register_seconds(
                r,
                "order_settle",
                "Time from an order's acceptance to CONFIRMED or CANCELLED",
                Histogram::new(SETTLE_BUCKETS),
            ),
            payments: register(
                r,
                "payments",
                "Captures recorded, by outcome",
                Family::default(),
            ),
            redis_bypasses: register(
                r,
                "redis_bypass",
                "Orders sent straight to Postgres because Redis failed",
                Counter::default(),
            ),
            sold_out_from_memory: register(
                r,
                "sold_out_from_memory",
                "Sold-out answers given without asking Redis",
                Counter::default(),
            ),
            seat_taken_from_memory: register(
                r,
                "seat_taken_from_memory",
                "Seat-taken answers given without queueing for the event's lock",
                Counter::default(),
            ),
            outbox_published: register(
                r,
                "outbox_published",
                "Outbox messages published to RabbitMQ and confirmed",
                Counter::default(),
            ),
            messages: register(
                r,
                "messages",
                "Messages handled by consumer and outcome",
                Family::default(),
            ),
            orders_expired: register(
                r,
                "orders_expired",
                "Unpaid orders expired by the sweeper",
                Counter::default(),
            ),
            stock_returns: register(
                r,
                "stock_returns_applied",
                "Stock returns given back to Redis",
                Counter::default(),
            ),
            reseeds: register(
                r,
                "redis_reseeds",
                "Events reseeded into Redis from Postgres",
                Counter::default(),
            ),
            holds_reclaimed: register(
                r,
                "holds_reclaimed",
                "Stale Redis holds confirmed or released by the reconciler",
                Counter::default(),
            ),
            stock_repairs: register(
                r,
                "stock_repairs",
                "Redis stock corrected to match Postgres",
                Counter::default(),
            ),
            requests: register_seconds(
                r,
                "http_request_duration",
                "HTTP requests by route, method and status, from routing to the handler's answer (the body not yet sent)",
                Family::new_with_constructor(http_histogram as fn() -> Histogram),
            ),
            outbox_depth: register(
                r,
                "outbox_depth",
                "Outbox rows not yet confirmed by RabbitMQ, read from Postgres at each scrape",
                Gauge::default(),
            ),
            orders_pending: register(
                r,
                "orders_pending",
                "Orders waiting for their payment (PENDING), read from Postgres at each scrape",
                Gauge::default(),
            ),
            oldest_pending: register_seconds(
                r,
                "orders_pending_oldest",
                "How long the oldest PENDING order has waited, read from Postgres at each scrape (0 with none)",
                Gauge::<f64, AtomicU64>::default(),
            ),
            writer_lanes: register(
                r,
                "writer_lanes",
                "Events with an order writer lane open (a lane leaves once it has waited its idle time, a minute, for a reservation)",
                Gauge::default(),
            ),
            writer_lanes_started: register(
                r,
                "writer_lanes_started",
                "Order writer lanes started: an event's first reservation, and its first after its lane left",
                Counter::default(),
            ),
            buyers_rate_limited: register(
                r,
                "buyer_requests_rate_limited",
                "Requests answered 429: their buyer asked faster than the per-buyer rate",
                Counter::default(),
            ),
            stream_clients: register(
                r,
                "stream_clients",
                "Clients connected to a live stock stream (GET /events/{id}/stream)",
                Gauge::default(),
            ),
            stream_messages: register(
                r,
                "stream_messages",
                "Stock changes told on the live streams, each once for every client of its event",
                Counter::default(),
            ),
            stream_clients_dropped: register(
                r,
                "stream_clients_dropped",
                "Stream clients dropped for reading too slowly",
                Counter::default(),
            ),
            stream_interval: register_seconds(
                r,
                "stream_interval",
                "How far apart an event's stream messages are now: the tick, or longer when the clients would take more messages a second than the budget",
                Gauge::<f64, AtomicU64>::default(),
            ),
            notices: register(
                r,
                "notices",
                "Notices by channel (mail, webhook) and result: sent, sent_before (a message handled again), off (no mail server), failed (to be tried again), dead (a webhook delivery given up)",
                Family::default(),
            ),
            notice_seconds: register_seconds(
                r,
                "notice",
                "Time from an order's end to its buyer's mail taken by the mail server",
                Histogram::new(SETTLE_BUCKETS),
            ),
            webhook_deliveries: register(
                r,
                "webhook_deliveries",
                "Organizers' webhook deliveries not delivered, as last read: waiting (to be tried) or dead (given up after the last try)",
                Family::default(),
            ),
            registry,
        }
    }
}

/// Registers `metric` under `name` and hands it back.
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// [`register`], for a metric measured in seconds.
fn register_seconds<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register_with_unit(name, help, Unit::Seconds, metric.clone());
    metric
}

impl Metrics {
    /// The labels buy requests can be answered with (see
    /// [`crate::orders::Placed::label`] and [`crate::orders::PlaceError::label`]),
    /// exported at zero from the start.
    pub fn declare_orders(&self, labels: &[&'static str]) {
        for &outcome in labels {
            let _declared = self.orders.get_or_create(&Outcome { outcome });
        }
    }

    /// A buy request answered with `label`.
    pub fn record_order(&self, label: &'static str) {
        self.orders.get_or_create(&Outcome { outcome: label }).inc();
    }

    pub fn record_batch(&self, size: usize, took: Duration) {
        self.batched_orders.inc_by(size as u64);
        self.batch_seconds.observe(took.as_secs_f64());
    }

    /// An order reached CONFIRMED or CANCELLED `took` after it was accepted.
    pub fn order_settled(&self, took: Duration) {
        self.settle_seconds.observe(took.as_secs_f64());
    }

    pub fn payment_recorded(&self, outcome: &'static str) {
        self.payments.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn redis_bypass(&self) {
        self.redis_bypasses.inc();
    }

    pub fn sold_out_from_memory(&self) {
        self.sold_out_from_memory.inc();
    }

    pub fn seat_taken_from_memory(&self) {
        self.seat_taken_from_memory.inc();
    }

    pub fn reseeded(&self) {
        self.reseeds.inc();
    }

    pub fn holds_reclaimed(&self, count: u64) {
        self.holds_reclaimed.inc_by(count);
    }

    pub fn orders_expired(&self, count: u64) {
        self.orders_expired.inc_by(count);
    }

    /// A message handled by `consumer`, labelled by how (see
    /// [`crate::saga::consumer::Handled::label`]).
    pub fn message_handled(&self, consumer: &'static str, outcome: &'static str) {
        self.messages
            .get_or_create(&Message { consumer, outcome })
            .inc();
    }

    pub fn outbox_published(&self, count: u64) {
        self.outbox_published.inc_by(count);
    }

    pub fn stock_returned(&self, count: u64) {
        self.stock_returns.inc_by(count);
    }

    pub fn stock_repaired(&self) {
        self.stock_repairs.inc();
    }

    /// An HTTP request to `route` (its pattern) answered `status` in `took`.
    pub fn http_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        let labels = Request {
            route: route.to_owned(),
            method: method.to_owned(),
            status,
        };
        self.requests
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// The outbox's depth as last read.
    pub fn set_outbox_depth(&self, depth: i64) {
        self.outbox_depth.set(depth);
    }

    /// The orders waiting to settle, as last read: how many, and how long
    /// the oldest has waited.
    pub fn set_pending(&self, pending: i64, oldest: Duration) {
        self.orders_pending.set(pending);
        self.oldest_pending.set(oldest.as_secs_f64());
    }

    /// A notice's fate on `channel`.
    pub fn notice(&self, channel: &'static str, result: &'static str) {
        self.notices
            .get_or_create(&Notice { channel, result })
            .inc();
    }

    /// A mail was taken by the mail server `waited` after its order ended.
    pub fn notice_mailed(&self, waited: Duration) {
        self.notice_seconds.observe(waited.as_secs_f64());
    }

    /// The webhook deliveries not delivered, as last read.
    pub fn set_webhook_deliveries(&self, waiting: i64, dead: i64) {
        for (state, count) in [("waiting", waiting), ("dead", dead)] {
            self.webhook_deliveries
                .get_or_create(&Delivery { state })
                .set(count);
        }
    }

    pub fn set_writer_lanes(&self, lanes: usize) {
        self.writer_lanes.set(lanes as i64);
    }

    pub fn writer_lane_started(&self) {
        self.writer_lanes_started.inc();
    }

    pub fn buyer_rate_limited(&self) {
        self.buyers_rate_limited.inc();
    }

    pub fn stream_client_joined(&self) {
        self.stream_clients.inc();
    }

    pub fn stream_client_left(&self) {
        self.stream_clients.dec();
    }

    pub fn stream_message(&self) {
        self.stream_messages.inc();
    }

    pub fn set_stream_spacing(&self, spacing: Duration) {
        self.stream_interval.set(spacing.as_secs_f64());
    }

    pub fn stream_client_dropped(&self) {
        self.stream_clients_dropped.inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
        metrics.seat_taken_from_memory();
        metrics.order_settled(Duration::from_millis(700));
        metrics.payment_recorded("SUCCEEDED");
        metrics.http_request("/orders/{id}", "GET", 200, Duration::from_micros(300));
        metrics.set_outbox_depth(7);
        metrics.set_pending(3, Duration::from_millis(1500));
        let text = metrics.render();
        for expected in [
            "flashtix_orders_total{outcome=\"sold_out\"} 2",
            "flashtix_order_batch_orders_total 15",
            "flashtix_order_batch_seconds_bucket{le=\"0.005\"} 1",
            "flashtix_order_batch_seconds_bucket{le=\"0.05\"} 2",
            "flashtix_order_batch_seconds_count 2",
            "flashtix_sold_out_from_memory_total 1",
            "flashtix_seat_taken_from_memory_total 1",
            "flashtix_order_settle_seconds_bucket{le=\"0.5\"} 0",
            "flashtix_order_settle_seconds_bucket{le=\"1.0\"} 1",
            "flashtix_payments_total{outcome=\"SUCCEEDED\"} 1",
            "flashtix_http_request_duration_seconds_bucket{le=\"0.00025\",route=\"/orders/{id}\",method=\"GET\",status=\"200\"} 0",
            "flashtix_http_request_duration_seconds_bucket{le=\"0.0005\",route=\"/orders/{id}\",method=\"GET\",status=\"200\"} 1",
            "flashtix_outbox_depth 7",
            "flashtix_orders_pending 3",
            "flashtix_orders_pending_oldest_seconds 1.5",
            "flashtix_build_info{version=\"",
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with EOF");
    }
}
