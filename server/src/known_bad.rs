//! Known-bad variants of the server, for proving that the drills and `check`
//! can fail. They exist only in a build with the test-only `known-bad`
//! feature, and only act when `FLASHTIX_KNOWN_BAD` names them (comma
//! separated). Without the feature [`has`] is a constant `false` and every
//! bad branch is compiled away.
//!
//! Each one is a mistake earlier flash-sale systems made (see
//! `docs/DETECTION.md` for what catches each):
//! - `ack-before-commit`: consumers acknowledge a batch before handling it, so
//!   a worker killed mid-batch loses messages (orders stuck PENDING);
//! - `publish-before-commit`: the relay marks rows published and commits before
//!   the broker has them, so a broker outage loses messages;
//! - `release-stock-twice`: a cancelled order gives its tickets back to
//!   Postgres twice (tickets minted: oversell);
//! - `no-stock-check`: the events table lacks its `available + pending + sold
//!   = total` CHECK, so nothing in Postgres stops minted tickets;
//! - `lua-result-ignored`: a reservation the Lua script refused is "given
//!   back" to Redis anyway, so Redis stock grows on every refusal;
//! - `redis-compensation-skipped`: a cancelled order's tickets go back to
//!   Postgres but never to Redis (no `stock_returns` row);
//! - `expiry-gives-back-paid`: the sweeper expires paid orders too, handing
//!   their tickets back while the money stays taken;
//! - `ack-on-failure`: a message whose handling failed is acknowledged (lost)
//!   instead of held and retried;
//! - `never-ack`: handled messages are never acknowledged (nor recorded as
//!   processed), so each consumer stops once the broker's prefetch window is
//!   full;
//! - `late-payment-not-refunded`: a capture that arrives for an order already
//!   expired or cancelled is kept, not refunded;
//! - `replay-answered-sold-out`: while a process answers `sold_out` from
//!   memory (the sold-out board, 250 ms at a time, renewed while buyers keep
//!   coming), every request is told so before its key is looked at, replays
//!   of accepted orders included, and no refusal is checked in Postgres;
//! - `check-then-insert`: idempotency is a read then an insert, with no unique
//!   constraint behind it, so one key sent to two events at once buys twice;
//! - `poison-wedge`: a message for an order we do not have is charged like
//!   any other; its insert fails the whole batch, which is retried forever;
//! - `seat-check-outside-lock`: the desk looks whether the named seats are
//!   free when a request comes in, outside any lock, and the writer takes
//!   them without asking again: every request that looked while another's
//!   order for the seat was on its way buys it too;
//! - `seats-back-at-once`: a seat freed by an unpaid order is on sale again at
//!   once, while the taken-seat board still answers "taken" for it from
//!   memory (for as long as the real server keeps freed seats off sale);
//! - `amount-off-by-one`: every order costs a cent more than its price, and
//!   its answer says so;
//! - `wrong-seat-in-answer`: a `202` names the seat beside the first one the
//!   order holds;
//! - `refusal-after-timeout`: a retry that waited its fill for the first
//!   try's order (still being written) is told `sold_out` instead of
//!   `request_in_progress`, and the first try's order commits after;
//! - `limit-counts-cancelled`: the order writer counts a buyer's cancelled
//!   orders toward the per-user limit, and refuses buyers who hold nothing;
//! - `redis-keeps-refused-stock`: a request Redis admitted and Postgres
//!   refused for want of stock gives Redis nothing back, on the reasoning
//!   that Redis was too high; when it was too high by less than the
//!   request, Redis is left too low and buyers are told `sold_out` while
//!   tickets remain;
//! - `notice-before-commit`: the order worker tells the buyers what the
//!   payments said, committed on its own before the settlement transaction
//!   decides and commits the orders' ends: a payment that came after the
//!   hold ran out is announced as CONFIRMED, though the order expired and
//!   the money goes back (and a settlement that then fails was told anyway);
//! - `new-message-id-per-send`: each mail gets a Message-ID of its own, so a
//!   notice sent again after a crash is a second, different notice;
//! - `ack-before-send`: the notifications role records its notices as sent
//!   and acknowledges their message before sending, so one killed mid-send
//!   loses them.

use sqlx::PgPool;

flashtix_model::named! {
    /// A mistake a known-bad server makes, by its name in
    /// `FLASHTIX_KNOWN_BAD`.
    pub enum Bug("a known mistake") {
        AckBeforeCommit = "ack-before-commit",
        PublishBeforeCommit = "publish-before-commit",
        ReleaseStockTwice = "release-stock-twice",
        NoStockCheck = "no-stock-check",
        LuaResultIgnored = "lua-result-ignored",
        RedisCompensationSkipped = "redis-compensation-skipped",
        ExpiryGivesBackPaid = "expiry-gives-back-paid",
        AckOnFailure = "ack-on-failure",
        NeverAck = "never-ack",
        LatePaymentNotRefunded = "late-payment-not-refunded",
        ReplayAnsweredSoldOut = "replay-answered-sold-out",
        CheckThenInsert = "check-then-insert",
        PoisonWedge = "poison-wedge",
        SeatCheckOutsideLock = "seat-check-outside-lock",
        SeatsBackAtOnce = "seats-back-at-once",
        AmountOffByOne = "amount-off-by-one",
        WrongSeatInAnswer = "wrong-seat-in-answer",
        RefusalAfterTimeout = "refusal-after-timeout",
        LimitCountsCancelled = "limit-counts-cancelled",
        RedisKeepsRefusedStock = "redis-keeps-refused-stock",
        NoticeBeforeCommit = "notice-before-commit",
        NewMessageIdPerSend = "new-message-id-per-send",
        AckBeforeSend = "ack-before-send",
    }
}

/// Whether this server makes `bug`.
#[cfg(feature = "known-bad")]
pub fn has(bug: Bug) -> bool {
    static SWITCHED: std::sync::OnceLock<Vec<Bug>> = std::sync::OnceLock::new();
    SWITCHED
        .get_or_init(|| {
            let named = std::env::var("FLASHTIX_KNOWN_BAD").unwrap_or_default();
            let switched: Vec<Bug> = Bug::ALL
                .into_iter()
                .filter(|bug| named.split(',').any(|n| n.trim() == bug.name()))
                .collect();
            if !switched.is_empty() {
                tracing::warn!(?switched, "KNOWN-BAD server: these bugs are switched on");
            }
            switched
        })
        .contains(&bug)
}

/// Whether this server makes `bug`: never, in a build without `known-bad`.
#[cfg(not(feature = "known-bad"))]
pub const fn has(_bug: Bug) -> bool {
    false
}

/// Removes, after the migrations, the constraints a bad server's schema lacks
/// (the sale's own schema only: the pool's search path is the namespace).
/// Nothing puts them back: a namespace served once by such a server is for
/// tests only (the real writer's `ON CONFLICT` needs the unique key).
pub async fn weaken_schema(pool: &PgPool) -> sqlx::Result<()> {
    if has(Bug::NoStockCheck) {
        sqlx::query("ALTER TABLE events DROP CONSTRAINT IF EXISTS events_check")
            .execute(pool)
            .await?;
    }
    if has(Bug::CheckThenInsert) {
        sqlx::query("ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_one_per_idempotency_key")
            .execute(pool)
            .await?;
    }
    if has(Bug::SeatsBackAtOnce) {
        sqlx::query(
            "CREATE OR REPLACE FUNCTION seat_return_delay() RETURNS interval
             LANGUAGE sql STABLE AS $$ SELECT interval '0 seconds' $$",
        )
        .execute(pool)
        .await?;
    }
    Ok(())
}
