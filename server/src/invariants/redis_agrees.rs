//! Redis agrees with Postgres once quiet: stock, buyers' counts, keys.

use sqlx::PgPool;

use crate::gate::Gate;
use flashtix_model::report::{finding, Finding, Invariant, Verdict, EXAMPLES};

/// 6. Redis agrees with Postgres once quiet: stock, each buyer's tickets held,
///    each idempotency entry.
pub(super) async fn redis_agrees(
    pool: &PgPool,
    gate: &Gate,
    event: Option<i64>,
) -> anyhow::Result<Finding> {
    let events = crate::catalogue::events::gated_ids(pool).await?;
    let events: Vec<i64> = events
        .into_iter()
        .filter(|id| event.is_none_or(|only| only == *id))
        .collect();
    let mut drifted = Vec::new();
    let mut unjudged = Vec::new();
    for &id in &events {
        // Redis, then Postgres, then Redis again: if Redis moved meanwhile (an
        // order, a confirmation, a return), the two reads are not comparable.
        // Postgres is read in one snapshot: stock, buyers, keys and returns.
        let before = gate.observe(id).await?;
        let snapshot = crate::gate::reconcile::snapshot(pool, id)
            .await?
            .unwrap_or_default();
        let (available, returns) = (snapshot.available, snapshot.returned.len());
        let ledger = gate.ledger(id).await?;
        let after = gate.observe(id).await?;
        let quiet = before.is_quiet()
            && returns == 0
            && before.seq == after.seq
            && ledger.seq == before.seq;
        match before.stock {
            None => unjudged.push(format!(
                "event {id}: Redis has no stock key (seeded on next order)"
            )),
            Some(_) if !quiet => unjudged.push(format!(
                "event {id}: not quiet ({} holds in flight, {} returns pending in Redis, {returns} in Postgres)",
                before.holds, before.returning
            )),
            Some(stock) => {
                if stock != available {
                    drifted.push(format!(
                        "event {id}: Redis stock {stock}, Postgres available {available} (drift {:+})",
                        stock - available
                    ));
                }
                drifted.extend(crate::gate::reconcile::ledger_drift(id, &snapshot, &ledger));
            }
        }
    }
    if drifted.is_empty() && !unjudged.is_empty() {
        return Ok(Finding {
            invariant: Invariant::RedisAgrees,
            verdict: Verdict::Unknown,
            checked: events.len() as u64,
            offending: unjudged.len() as u64,
            detail: "Redis cannot be compared yet".into(),
            examples: unjudged.into_iter().take(EXAMPLES).collect(),
        });
    }
    Ok(finding(
        Invariant::RedisAgrees,
        events.len() as u64,
        drifted,
        "Redis stock, buyers' ticket counts and idempotency entries equal Postgres's",
        "Redis drifted from Postgres (repair with `flashtix check --repair`)",
    ))
}
