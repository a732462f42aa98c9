//! How storm buyers choose on a seated event: the way people do. Most want
//! the first zones of the plan (the best), in a reserved zone the front rows
//! and the middle of a row, and a group wants its seats side by side. What a
//! buyer wants is fixed by the seed and the purchase's number, like the rest.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::Context;
use serde_json::Value;

use flashtix_model::seating::zone_of;

use flashtix_model::rng::draw;

/// What a purchase asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// A quantity alone (an event sold by count).
    Count,
    /// The best places left in a zone.
    Zone(String),
    /// These seats, all or none.
    Seats(Vec<String>),
}

impl Want {
    /// The seats it names, if it names seats.
    pub fn seats(&self) -> Option<&[String]> {
        match self {
            Self::Seats(seats) => Some(seats),
            _ => None,
        }
    }

    /// The zone it asks for (the server picking the places), if it names one.
    pub fn asked_zone(&self) -> Option<&str> {
        match self {
            Self::Zone(zone) => Some(zone),
            _ => None,
        }
    }

    /// The zone a choice is in.
    pub fn zone(&self) -> Option<&str> {
        match self {
            Self::Count => None,
            Self::Zone(zone) => Some(zone),
            Self::Seats(seats) => seats.first().and_then(|seat| zone_of(seat)),
        }
    }
}

/// One zone, as the seat map shows it.
#[derive(Debug, Clone, PartialEq)]
struct Zone {
    name: String,
    /// Reserved: each row, each seat for sale or not. General: empty.
    rows: Vec<Vec<bool>>,
}

/// A seated event's plan, as buyers see it before the storm.
#[derive(Debug, Clone, PartialEq)]
pub struct SeatedEvent {
    zones: Vec<Zone>,
}

/// Purposes of the draws (the workload's are 1 to 4).
const ZONE: u64 = 5;
const ROW: u64 = 6;
const MIDDLE: [u64; 3] = [7, 8, 9];

impl SeatedEvent {
    /// Reads `GET /events/{id}/seats`.
    pub fn from_map(map: &Value) -> anyhow::Result<Self> {
        let zones = map["zones"]
            .as_array()
            .context("a seat map lists its zones")?
            .iter()
            .map(|zone| {
                let name = zone["name"]
                    .as_str()
                    .context("a zone has a name")?
                    .to_owned();
                let rows = zone["rows"]
                    .as_array()
                    .map(|rows| {
                        rows.iter()
                            .map(|row| {
                                row.as_str()
                                    .unwrap_or_default()
                                    .chars()
                                    .map(|state| state != 'x')
                                    .collect()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Zone { name, rows })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!zones.is_empty(), "a seat map with no zones");
        Ok(Self { zones })
    }

    /// What purchase `number` of a storm seeded `seed` wants, for `quantity`.
    pub fn choose(&self, seed: u64, number: u64, quantity: i64) -> Want {
        // Zone i is wanted 1/(i+1) as much as the first.
        let weights: Vec<f64> = (0..self.zones.len())
            .map(|i| 1.0 / (i + 1) as f64)
            .collect();
        let mut point = draw(seed, number, ZONE) * weights.iter().sum::<f64>();
        let mut index = weights.len() - 1;
        for (i, weight) in weights.iter().enumerate() {
            if point < *weight {
                index = i;
                break;
            }
            point -= weight;
        }
        let zone = &self.zones[index];
        if zone.rows.is_empty() {
            return Want::Zone(zone.name.clone());
        }
        // The front first: the square of a uniform draw leans to 0.
        let row = ((draw(seed, number, ROW).powi(2) * zone.rows.len() as f64) as usize)
            .min(zone.rows.len() - 1);
        let seats = &zone.rows[row];
        let wanted = quantity.max(1) as usize;
        if seats.len() < wanted {
            return Want::Zone(zone.name.clone());
        }
        // The middle of the row, give or take: three draws summed lean to the centre.
        let spread: f64 = MIDDLE.iter().map(|&p| draw(seed, number, p)).sum::<f64>() - 1.5;
        let middle = seats.len() as f64 / 2.0 + spread * seats.len() as f64 / 3.0;
        let first = (middle - wanted as f64 / 2.0)
            .round()
            .clamp(0.0, (seats.len() - wanted) as f64) as usize;
        if !seats[first..first + wanted]
            .iter()
            .all(|for_sale| *for_sale)
        {
            return Want::Zone(zone.name.clone());
        }
        Want::Seats(
            (first..first + wanted)
                .map(|n| format!("{}-{}-{}", zone.name, row + 1, n + 1))
                .collect(),
        )
    }
}

/// The seated events among `events`, read from the sale's API; an event
/// without a plan answers 404 and is sold by count.
pub async fn fetch(
    client: &reqwest::Client,
    target: &str,
    events: &[i64],
) -> anyhow::Result<HashMap<i64, Arc<SeatedEvent>>> {
    let mut seated = HashMap::new();
    for (event, map) in maps(client, target, events).await? {
        seated.insert(event, Arc::new(SeatedEvent::from_map(&map)?));
    }
    Ok(seated)
}

/// The seat maps after a storm: asked again, a few times, while the sale
/// answers 503 (a dependency it just lost and is winning back).
pub async fn maps_after_storm(
    client: &reqwest::Client,
    target: &str,
    events: &[i64],
) -> anyhow::Result<BTreeMap<i64, Value>> {
    let mut tries = 0;
    loop {
        match maps(client, target, events).await {
            Ok(maps) => return Ok(maps),
            Err(error) if tries < 10 => {
                tries += 1;
                tracing::debug!(error = %error, "seat maps not yet; asking again");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The seat maps of the seated events among `events`, as the API gives them.
pub async fn maps(
    client: &reqwest::Client,
    target: &str,
    events: &[i64],
) -> anyhow::Result<BTreeMap<i64, Value>> {
    let mut maps = BTreeMap::new();
    for &event in events {
        let url = format!("{target}/events/{event}/seats");
        let response = match client.get(&url).send().await {
            Err(error) if error.is_connect() => {
                return Err(anyhow::Error::new(error).context(format!(
                    "nothing answers at {target}: is the sale running? Start it with \
                     `flashtix serve`, or point --target at it"
                )))
            }
            sent => sent.with_context(|| format!("reading the seat map at {url}"))?,
        };
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            continue;
        }
        let map: Value = response
            .error_for_status()
            .with_context(|| format!("reading the seat map at {url}"))?
            .json()
            .await
            .with_context(|| format!("reading the seat map at {url}"))?;
        maps.insert(event, map);
    }
    Ok(maps)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn concert() -> SeatedEvent {
        let a = vec![format!("x{}", ".".repeat(19)); 10];
        let b = vec![".".repeat(30); 20];
        SeatedEvent::from_map(&json!({"zones": [
            {"name": "A", "rows": a},
            {"name": "B", "rows": b},
            {"name": "GA", "rows": null},
        ]}))
        .unwrap()
    }

    #[test]
    fn buyers_lean_to_the_first_zones_the_front_rows_and_the_middle() {
        let plan = concert();
        let wants: Vec<Want> = (0..6000).map(|n| plan.choose(3, n, 2)).collect();
        let in_zone = |zone: &str| wants.iter().filter(|w| w.zone() == Some(zone)).count();
        let (a, b, ga) = (in_zone("A"), in_zone("B"), in_zone("GA"));
        assert!(a > b && b > ga, "A {a}, B {b}, GA {ga}");
        assert!(
            (2_900..3_650).contains(&a),
            "A wanted 6/11 of the time: {a}"
        );
        let rows_of_b: Vec<usize> = wants
            .iter()
            .filter_map(|w| match w {
                Want::Seats(seats) if zone_of(&seats[0]) == Some("B") => {
                    seats[0].split('-').nth(1)?.parse().ok()
                }
                _ => None,
            })
            .collect();
        let front = rows_of_b.iter().filter(|&&r| r <= 5).count();
        let back = rows_of_b.iter().filter(|&&r| r > 15).count();
        assert!(front > 2 * back, "front {front}, back {back}");
        for want in &wants {
            if let Want::Seats(seats) = want {
                assert_eq!(seats.len(), 2, "a group of two");
                let numbers: Vec<i32> = seats
                    .iter()
                    .map(|s| s.rsplit('-').next().unwrap().parse().unwrap())
                    .collect();
                assert_eq!(numbers[1], numbers[0] + 1, "side by side: {seats:?}");
                assert!(
                    !(zone_of(&seats[0]) == Some("A") && numbers[0] == 1),
                    "seat 1 of A's rows is not for sale: {seats:?}"
                );
            }
        }
        assert_eq!(
            plan.choose(3, 17, 2),
            plan.choose(3, 17, 2),
            "the seed fixes it"
        );
    }

    #[test]
    fn a_group_too_big_for_its_row_asks_for_the_zone() {
        let plan =
            SeatedEvent::from_map(&json!({"zones": [{"name": "S", "rows": ["..."]}]})).unwrap();
        assert_eq!(plan.choose(1, 1, 4), Want::Zone("S".into()));
        assert_eq!(zone_of("GA-2-10"), Some("GA"));
    }
}
