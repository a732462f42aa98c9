//! The organizer's webhooks, judged by the receiver's record.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::received::{deliveries, Delivery};
use super::{answers, on_their_way, unknown, Order};
use crate::notices::signature::verify;
use flashtix_model::notices::{notice_id, parse_notice_id, Ending};
use flashtix_model::report::{finding, Finding, Invariant};

/// `webhooks_signed` and `webhooks_delivered`, from the record at `record`.
pub(super) async fn check(
    pool: &PgPool,
    record: &Path,
    secret: &[u8],
    orders: &HashMap<Uuid, Order>,
    grace: Duration,
) -> anyhow::Result<Vec<Finding>> {
    let received = match deliveries(record) {
        Ok(received) => received,
        Err(error) => {
            let why = format!(
                "the webhook record {} cannot be read: {error:#}",
                record.display()
            );
            return Ok(vec![
                unknown(Invariant::WebhooksSigned, why.clone()),
                unknown(Invariant::WebhooksDelivered, why),
            ]);
        }
    };
    // This sale's deliveries only: a receiver may serve several. A POST
    // that names no delivery at all is nobody's, and judged as a forgery.
    let mut ours: Vec<(Delivery, Uuid, Ending)> = Vec::new();
    let mut strays = Vec::new();
    for delivery in received {
        match parse_notice_id(&delivery.id) {
            Some((order, ending)) if orders.contains_key(&order) => {
                ours.push((delivery, order, ending))
            }
            Some(_) => {}
            None => strays.push(format!("a POST naming no delivery ({:?})", delivery.id)),
        }
    }
    let queued = queued(pool).await?;
    Ok(vec![
        signed(&ours, strays, secret),
        delivered(&ours, orders, &queued, grace),
    ])
}

/// What the sale's table says of a delivery it has not seen taken.
pub(super) enum Queued {
    /// Given up after its last try: why.
    Dead(String),
    /// To be tried again; whether its receiver answers now.
    Waiting { receiver_down: bool },
}

/// The deliveries the sale has not seen taken, by id, each waiting one
/// with whether its own receiver answers (each URL asked once).
async fn queued(pool: &PgPool) -> anyhow::Result<HashMap<String, Queued>> {
    let rows: Vec<(String, String, bool, i32, Option<String>)> = sqlx::query_as(
        "SELECT id, url, dead_at IS NOT NULL, attempts, last_error
         FROM webhook_deliveries WHERE delivered_at IS NULL",
    )
    .fetch_all(pool)
    .await?;
    let mut answering: HashMap<String, bool> = HashMap::new();
    let mut queued = HashMap::with_capacity(rows.len());
    for (id, url, dead, attempts, error) in rows {
        let state = if dead {
            let error = error.unwrap_or_default();
            Queued::Dead(format!("dead-lettered after {attempts} tries: {error}"))
        } else {
            let address = host_port(&url);
            let up = match answering.get(&address) {
                Some(up) => *up,
                None => {
                    let up = answers(&address).await;
                    answering.insert(address, up);
                    up
                }
            };
            Queued::Waiting { receiver_down: !up }
        };
        queued.insert(id, state);
    }
    Ok(queued)
}

/// `host:port` of an http(s) URL.
fn host_port(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        let port = if scheme == "https" { 443 } else { 80 };
        format!("{authority}:{port}")
    }
}

fn signed(ours: &[(Delivery, Uuid, Ending)], strays: Vec<String>, secret: &[u8]) -> Finding {
    let checked = (ours.len() + strays.len()) as u64;
    let mut forged = strays;
    for (delivery, _, _) in ours {
        let body_id = serde_json::from_str::<serde_json::Value>(&delivery.body)
            .ok()
            .and_then(|body| body["id"].as_str().map(str::to_owned));
        let wrong = match verify(
            secret,
            &delivery.timestamp,
            &delivery.signature,
            delivery.body.as_bytes(),
        ) {
            Err(why) => Some(why),
            Ok(()) if body_id.as_deref() != Some(&delivery.id) => {
                Some(format!("its body names {body_id:?}"))
            }
            Ok(()) => None,
        };
        if let Some(why) = wrong {
            forged.push(format!("delivery {}: {why}", delivery.id));
        }
    }
    finding(
        Invariant::WebhooksSigned,
        checked,
        forged,
        "every delivery received verifies against its signature",
        "deliveries that do not verify: a receiver must refuse them",
    )
}

fn delivered(
    ours: &[(Delivery, Uuid, Ending)],
    orders: &HashMap<Uuid, Order>,
    queued: &HashMap<String, Queued>,
    grace: Duration,
) -> Finding {
    let mut broken = Vec::new();
    let mut taken = HashSet::new();
    for (delivery, order, ending) in ours {
        if !(200..300).contains(&delivery.status) {
            continue;
        }
        taken.insert((*order, *ending));
        let told = &orders[order];
        if !told.ended_so(*ending) {
            broken.push(format!(
                "order {order} {}, but delivery {} told the organizer {ending}",
                told.said(),
                delivery.id
            ));
        }
    }
    let (mut waiting, mut endings, mut down) = (Vec::new(), 0u64, false);
    for (id, order) in orders.iter().filter(|(_, o)| o.has_webhook) {
        for (ending, ago) in order.endings() {
            endings += 1;
            if taken.contains(&(*id, ending)) {
                continue;
            }
            let delivery = notice_id(*id, ending);
            let late = ago > grace.as_secs_f64();
            match queued.get(&delivery) {
                Some(Queued::Dead(why)) => broken.push(format!("delivery {delivery}: {why}")),
                Some(Queued::Waiting { receiver_down }) if !late || *receiver_down => {
                    down |= *receiver_down;
                    waiting.push(format!("delivery {delivery}: on its way"));
                }
                Some(Queued::Waiting { .. }) => broken.push(format!(
                    "delivery {delivery}: not taken {ago:.0} s after the order ended so, \
                     though its receiver answers"
                )),
                None if late => broken.push(format!(
                    "delivery {delivery}: not in the receiver's record {ago:.0} s after the \
                     order ended so (the sale never queued it, or holds it delivered)"
                )),
                None => waiting.push(format!("delivery {delivery}: on its way")),
            }
        }
    }
    broken.sort();
    if broken.is_empty() && !waiting.is_empty() {
        let why = if down {
            "not taken yet; a receiver does not answer: its deliveries wait for it"
        } else {
            "not taken yet; deliveries on their way (within the grace)"
        };
        return on_their_way(Invariant::WebhooksDelivered, endings, waiting, why);
    }
    finding(
        Invariant::WebhooksDelivered,
        endings,
        broken,
        "every ending taken by the organizer's receiver, telling the truth",
        "endings the organizer was not told, or told wrong",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_names_the_address_it_is_posted_to() {
        assert_eq!(host_port("http://127.0.0.1:9000/hook"), "127.0.0.1:9000");
        assert_eq!(host_port("https://hooks.example/x?y"), "hooks.example:443");
        assert_eq!(host_port("http://u:p@h.example/"), "h.example:80");
    }
}

/// Builds the two findings from deliveries made up in memory.
#[cfg(test)]
pub(super) mod tests_support {
    use super::*;
    use crate::notices::signature::sign;

    fn delivery(order: Uuid, ending: Ending, status: u16, secret: &[u8]) -> Delivery {
        let id = notice_id(order, ending);
        let body = serde_json::json!({ "id": id }).to_string();
        Delivery {
            signature: sign(secret, 1_700_000_000, body.as_bytes()),
            timestamp: "1700000000".into(),
            id,
            body,
            status,
        }
    }

    /// `webhooks_signed` of one delivery, changed by `tamper`.
    pub fn signed_of(
        secret: &[u8],
        order: Uuid,
        ending: Ending,
        tamper: impl FnOnce(&mut Delivery),
    ) -> Finding {
        let mut one = delivery(order, ending, 200, secret);
        tamper(&mut one);
        signed(&[(one, order, ending)], Vec::new(), secret)
    }

    /// `webhooks_delivered` of these deliveries; every missing one is
    /// queued: dead-lettered so (`dead`), or waiting, its receiver `down`
    /// or not.
    pub fn delivered_of(
        orders: &HashMap<Uuid, Order>,
        taken: &[(Uuid, Ending, u16)],
        dead: Option<&str>,
        down: bool,
    ) -> Finding {
        let ours: Vec<_> = taken
            .iter()
            .map(|(order, ending, status)| {
                (delivery(*order, *ending, *status, b"s"), *order, *ending)
            })
            .collect();
        // Every delivery not taken is queued: dead, or waiting.
        let queued: HashMap<String, Queued> = orders
            .keys()
            .flat_map(|id| Ending::ALL.map(|e| notice_id(*id, e)))
            .map(|id| {
                let state = match dead {
                    Some(why) => Queued::Dead(why.to_owned()),
                    None => Queued::Waiting {
                        receiver_down: down,
                    },
                };
                (id, state)
            })
            .collect();
        delivered(&ours, orders, &queued, Duration::from_secs(30))
    }
}
