//! Telling each order's buyer and organizer how it ended (role
//! `notifications`).
//!
//! The order worker, the sweeper and the refund each write an
//! `order.settled` message in the transaction that ends the order (or
//! records the refund), so nobody is told of an end that did not commit,
//! and every end that did is told. The `worker` takes those messages:
//! it mails the buyer ([`mail`]) and queues the organizer's delivery, which
//! [`webhooks`] POSTs, signed ([`signature`]), until it is taken or
//! dead-lettered. Every notice has one name, its order and ending
//! (`flashtix_model::notices::notice_id`): the mail's Message-ID and the
//! webhook's delivery id, the same on every resend.

pub mod mail;
pub mod signature;
pub mod webhooks;
mod worker;

pub use worker::NotificationWorker;
