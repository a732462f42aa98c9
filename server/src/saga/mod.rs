//! What happens to an order after its commit, as messages: the [`outbox`]
//! relays it to RabbitMQ (on the topology of [`broker`]), [`payments`]
//! charges it, [`settlement`] confirms, cancels or refunds it, and [`expiry`]
//! ends holds nobody paid for; both announce each order's end
//! (`order.settled`) in the transaction that ends it. [`consumer`] is how payments and settlement
//! read their queues; [`messages`] the words on the wire.

pub mod broker;
pub mod consumer;
pub mod expiry;
pub mod messages;
pub mod outbox;
pub mod payments;
pub mod settlement;
