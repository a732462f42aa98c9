//! RabbitMQ: the namespace's exchanges and queues, declared the same way by
//! every process that uses them (declaring is idempotent).
//!
//! - `{ns}.sale`: durable topic exchange; a message's routing key is its topic
//!   (`order.created`, `payment.result`).
//! - `{ns}.{topic}`: one quorum queue per topic. After [`DELIVERY_LIMIT`]
//!   failed deliveries a message goes to the dead-letter exchange instead of
//!   looping forever. Where quorum queues are unavailable, a classic durable
//!   queue, which RabbitMQ gives no delivery limit. Both keep persistent
//!   messages on disk; a quorum queue also replicates them across a cluster's
//!   nodes (here there is one), and costs no more CPU at this message rate.
//! - `{ns}.dead`: the dead-letter exchange, and `{ns}.{topic}.dead`, the queues
//!   holding what could not be processed, for an operator to look at.

use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::options::{
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm,
};

use crate::runtime::config::Namespace;
use crate::runtime::stop::Stop;
use crate::saga::messages::TOPICS;

/// Deliveries of one message before it is dead-lettered.
pub const DELIVERY_LIMIT: i64 = 5;

/// How long a RabbitMQ call may take before it counts as failed. A broker that
/// accepts the TCP connection but never answers (overloaded, out of file
/// descriptors, half-open socket) must not stall a caller forever.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to RabbitMQ, giving up after [`CALL_TIMEOUT`].
pub async fn connect(amqp_url: &str) -> anyhow::Result<Connection> {
    within(
        "connecting to RabbitMQ",
        Connection::connect(amqp_url, ConnectionProperties::default()),
    )
    .await
}

/// Closes a session cleanly: the channel first, which the broker answers only
/// after it has taken every acknowledgement sent before, then the connection.
/// Deliveries not acknowledged go back to their queues. A broker that does not
/// answer is left to notice the socket closing.
pub async fn close(connection: &Connection, channel: &Channel) {
    let _ = within("closing the channel", channel.close(200, "stopping".into())).await;
    let _ = within(
        "closing the connection",
        connection.close(200, "stopping".into()),
    )
    .await;
}

/// Publishes a sale message: JSON, persistent (the broker writes it to disk
/// before confirming) and mandatory (unroutable is an error, not a silent
/// drop). The caller awaits the returned confirm.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    topic: &str,
    message_id: uuid::Uuid,
    headers: FieldTable,
    body: &[u8],
) -> lapin::Result<PublisherConfirm> {
    let properties = BasicProperties::default()
        .with_message_id(message_id.to_string().into())
        .with_content_type("application/json".into())
        .with_type(topic.into())
        .with_headers(headers)
        .with_delivery_mode(2);
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    channel
        .basic_publish(exchange.into(), topic.into(), options, body, properties)
        .await
}

/// Runs one broker call, failing it if RabbitMQ has not answered within
/// [`CALL_TIMEOUT`].
pub async fn within<T, E>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    E: Into<anyhow::Error>,
{
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => anyhow::bail!("{what}: no answer from RabbitMQ within {CALL_TIMEOUT:?}"),
    }
}

/// Pacing and log noise for a loop that keeps a RabbitMQ session alive: waits
/// between attempts double from 100 ms to 5 s, the first failure of a streak
/// and the recovery are logged, nothing in between.
pub struct Reconnect {
    what: &'static str,
    backoff: Duration,
    failing: bool,
}

const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

impl Reconnect {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            backoff: BACKOFF.0,
            failing: false,
        }
    }

    /// A session is up: say so if it was down, and start the backoff afresh.
    pub fn connected(&mut self) {
        if std::mem::take(&mut self.failing) {
            tracing::info!(what = self.what, "connected to RabbitMQ again");
        }
        self.backoff = BACKOFF.0;
    }

    /// A session ended: say why (once per streak), then wait before the next.
    /// A session broke: say so if it is the first failure of a streak, then
    /// wait before the next attempt. Returns whether to try again (not if the
    /// process is stopping).
    pub async fn failed(&mut self, error: anyhow::Error, stop: &mut Stop) -> bool {
        if !self.failing {
            tracing::warn!(
                what = self.what,
                error = format!("{error:#}"),
                "stopped; reconnecting"
            );
            self.failing = true;
        }
        let go_on = stop.pause(self.backoff).await;
        self.backoff = (self.backoff * 2).min(BACKOFF.1);
        go_on
    }
}

/// The names of one namespace's exchanges and queues.
#[derive(Debug, Clone)]
pub struct Topology {
    namespace: Namespace,
}

impl Topology {
    pub fn new(namespace: Namespace) -> Self {
        Self { namespace }
    }

    pub fn exchange(&self) -> String {
        format!("{}.sale", self.namespace)
    }

    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead", self.namespace)
    }

    pub fn queue(&self, topic: &str) -> String {
        format!("{}.{topic}", self.namespace)
    }

    pub fn dead_letter_queue(&self, topic: &str) -> String {
        format!("{}.{topic}.dead", self.namespace)
    }

    /// Every queue of the namespace, live and dead-letter.
    pub fn queues(&self) -> Vec<String> {
        TOPICS
            .iter()
            .flat_map(|topic| [self.queue(topic), self.dead_letter_queue(topic)])
            .collect()
    }

    /// Declares the exchanges, queues and bindings.
    pub async fn declare(&self, connection: &Connection) -> lapin::Result<()> {
        let channel = connection.create_channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for exchange in [self.exchange(), self.dead_letter_exchange()] {
            channel
                .exchange_declare(
                    name(&exchange),
                    ExchangeKind::Topic,
                    durable,
                    FieldTable::default(),
                )
                .await?;
        }
        for topic in TOPICS {
            let dead = self.dead_letter_queue(topic);
            declare_queue(connection, &dead, FieldTable::default()).await?;
            channel
                .queue_bind(
                    name(&dead),
                    name(&self.dead_letter_exchange()),
                    name(topic),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;

            let mut arguments = FieldTable::default();
            arguments.insert(
                name("x-dead-letter-exchange"),
                text(&self.dead_letter_exchange()),
            );
            arguments.insert(
                name("x-delivery-limit"),
                AMQPValue::LongLongInt(DELIVERY_LIMIT),
            );
            let live = self.queue(topic);
            declare_queue(connection, &live, arguments).await?;
            channel
                .queue_bind(
                    name(&live),
                    name(&self.exchange()),
                    name(topic),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Connects, declares the topology and opens a channel: the start of every
    /// session of the relay and the workers. The connection must outlive the
    /// channel.
    pub async fn open(&self, amqp_url: &str) -> anyhow::Result<(Connection, Channel)> {
        let connection = connect(amqp_url).await?;
        within("declaring the topology", self.declare(&connection)).await?;
        let channel = within("opening a channel", connection.create_channel()).await?;
        Ok((connection, channel))
    }

    /// Empties every queue of the namespace. Returns how many messages it dropped.
    pub async fn purge(&self, connection: &Connection) -> lapin::Result<u64> {
        self.declare(connection).await?;
        let channel = connection.create_channel().await?;
        let mut purged = 0;
        for queue in self.queues() {
            purged += u64::from(
                channel
                    .queue_purge(name(&queue), QueuePurgeOptions::default())
                    .await?,
            );
        }
        Ok(purged)
    }
}

/// Declares a durable queue: quorum if the broker has them, classic if not.
async fn declare_queue(
    connection: &Connection,
    queue: &str,
    arguments: FieldTable,
) -> lapin::Result<()> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let mut quorum = arguments.clone();
    quorum.insert(name("x-queue-type"), text("quorum"));
    // A refused declaration closes its channel, so each try gets its own.
    let channel = connection.create_channel().await?;
    if channel
        .queue_declare(name(queue), durable, quorum)
        .await
        .is_ok()
    {
        return Ok(());
    }
    tracing::warn!(
        queue,
        "quorum queue refused; declaring a classic durable queue, without a delivery limit"
    );
    // Classic queues take no delivery limit (RabbitMQ refuses the argument).
    let arguments: FieldTable = arguments
        .inner()
        .iter()
        .filter(|(key, _)| key.as_str() != "x-delivery-limit")
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into();
    let channel: Channel = connection.create_channel().await?;
    channel
        .queue_declare(name(queue), durable, arguments)
        .await
        .map(drop)
}

fn name(text: &str) -> ShortString {
    text.into()
}

fn text(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text.as_bytes().to_vec()))
}

/// Messages ready in a queue (not those delivered and not yet
/// acknowledged); `None` for a queue that does not exist. Any
/// other answer of the broker's is an error.
pub async fn depth(connection: &lapin::Connection, queue: &str) -> lapin::Result<Option<u32>> {
    use lapin::options::QueueDeclareOptions;
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    // A passive declare of a missing queue closes the channel: one per queue.
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match channel
        .queue_declare(queue.into(), passive, lapin::types::FieldTable::default())
        .await
    {
        Ok(declared) => Ok(Some(declared.message_count())),
        Err(error) => match error.kind() {
            lapin::ErrorKind::ProtocolError(amqp)
                if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) =>
            {
                Ok(None)
            }
            _ => Err(error),
        },
    }
}
