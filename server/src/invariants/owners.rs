//! "Orders owned by askers": every order a `202` named belongs to the buyer
//! who asked for it. A history records each attempt's buyer as the subject of
//! the token it was sent with (never the token), and the sale must have
//! written the order under that subject: not under a name from the body, not
//! under another buyer's.

use std::collections::HashMap;

use sqlx::PgPool;
use uuid::Uuid;

use super::ledger::attempts_judged;
use flashtix_model::history::{Attempt, Outcome};
use flashtix_model::report::{finding, Finding, Invariant};

pub(super) async fn orders_owned_by_askers(
    pool: &PgPool,
    history: &[Attempt],
    event: Option<i64>,
) -> anyhow::Result<Finding> {
    let (accepted, _) = attempts_judged(history, event, |outcome| {
        matches!(outcome, Outcome::Accepted | Outcome::Replayed)
    });
    let named: Vec<Uuid> = accepted.iter().filter_map(|a| a.order_id).collect();
    let owners: HashMap<Uuid, String> =
        sqlx::query_as::<_, (Uuid, String)>("SELECT id, user_id FROM orders WHERE id = ANY($1)")
            .bind(&named)
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    let mut offenders = Vec::new();
    let mut judged = 0u64;
    for attempt in accepted {
        // An order that does not exist is "no lost order"'s to judge.
        let Some(owner) = attempt.order_id.and_then(|id| owners.get(&id)) else {
            continue;
        };
        judged += 1;
        if *owner != attempt.user_id {
            offenders.push(format!(
                "order {} was asked for by {:?} (key {:?}) and belongs to {owner:?}",
                attempt.order_id.unwrap_or_default(),
                attempt.user_id,
                attempt.idempotency_key
            ));
        }
    }
    offenders.sort();
    offenders.dedup();
    Ok(finding(
        Invariant::OrdersOwnedByAskers,
        judged,
        offenders,
        "every order a 202 named belongs to the buyer whose token asked for it",
        "orders belong to someone other than the buyer who asked",
    ))
}
