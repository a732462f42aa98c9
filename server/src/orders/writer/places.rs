//! The places a batch on a seated event takes: named seats, the best free
//! seats of a reserved zone, or room in a general-admission zone; read under
//! the event's row lock and handed out ticket by ticket.

use std::collections::{HashMap, HashSet};

use flashtix_model::holds_tickets;

use super::{Ruling, Ticket};
use crate::catalogue::seating::SEAT_FREE;
use crate::known_bad::{self, Bug};
use flashtix_model::seating::{best_available, parse_seat, Choice, Plan, ZoneKind};

/// What an accepted ticket bought.
#[derive(Debug, Clone)]
pub(super) struct Bought {
    pub(super) amount_cents: i64,
    pub(super) seats: Option<Vec<String>>,
    pub(super) zone: Option<String>,
}

impl Bought {
    /// Tickets by count, at the event's price.
    pub(super) fn counted(ticket: &Ticket) -> Self {
        Self {
            amount_cents: i64::from(ticket.hold.quantity) * ticket.terms.price_cents,
            seats: None,
            zone: None,
        }
    }
}

/// Why a ticket's places could not be taken.
pub(super) enum Refusal {
    SeatTaken(Vec<String>),
    ZoneSoldOut,
}

impl From<Refusal> for Ruling {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::SeatTaken(seats) => Self::SeatTaken(seats),
            Refusal::ZoneSoldOut => Self::ZoneSoldOut,
        }
    }
}

/// The places a batch on an event with a plan asks for, as Postgres has
/// them under the event's row lock, less what earlier tickets of the batch
/// took.
pub(super) struct Places {
    /// Named seats that are free.
    free: HashSet<String>,
    /// Named seats an order holds or bought.
    pub(super) owned: Vec<String>,
    /// Reserved zones asked for by count: their free seats by row and number.
    free_in_zone: HashMap<String, Vec<(i32, i32, String)>>,
    /// General-admission zones asked for: places left.
    left_in_zone: HashMap<String, i64>,
}

/// What a batch asks of an event's places.
#[derive(Default)]
struct Wants<'a> {
    /// Seats named.
    named: Vec<&'a str>,
    /// Per zone, how many seats the batch names there.
    named_in: HashMap<&'a str, i64>,
    /// Reserved zones asked for by count, with how many seats the batch wants there.
    reserved: HashMap<&'a str, i64>,
    /// General-admission zones asked for.
    general: Vec<&'a str>,
}

impl<'a> Wants<'a> {
    fn of(plan: &Plan, batch: &'a [Ticket]) -> Self {
        let mut wants = Self::default();
        for ticket in batch {
            match &ticket.choice {
                Choice::Seats(seats) => {
                    wants.named.extend(seats.iter().map(String::as_str));
                    for seat in seats {
                        if let Some((zone, _, _)) = parse_seat(seat) {
                            *wants.named_in.entry(zone).or_default() += 1;
                        }
                    }
                }
                Choice::Zone(zone) => match plan.zone(zone) {
                    Some((_, z)) if z.kind == ZoneKind::General => wants.general.push(zone),
                    Some(_) => {
                        *wants.reserved.entry(zone).or_default() += i64::from(ticket.hold.quantity)
                    }
                    None => {}
                },
                Choice::Count => {}
            }
        }
        wants
    }
}

impl Places {
    pub(super) async fn read(
        tx: &mut sqlx::PgConnection,
        event_id: i64,
        plan: &Plan,
        batch: &[Ticket],
    ) -> sqlx::Result<Self> {
        let wants = Wants::of(plan, batch);
        let (free, owned) = read_named(tx, event_id, &wants.named).await?;
        let free_in_zone = read_reserved(tx, event_id, &wants).await?;
        let left_in_zone = read_general(tx, event_id, plan, &wants.general).await?;
        Ok(Self {
            free,
            owned,
            free_in_zone,
            left_in_zone,
        })
    }

    /// Which of `seats` are not free (held, sold, or taken earlier in the
    /// batch).
    pub(super) fn gone(&self, seats: &[String]) -> Vec<String> {
        // A known-bad writer trusts the check the desk made when the request
        // came in.
        if known_bad::has(Bug::SeatCheckOutsideLock) {
            return Vec::new();
        }
        seats
            .iter()
            .filter(|seat| !self.free.contains(*seat))
            .cloned()
            .collect()
    }

    /// Seats a ticket of the batch took: gone for the tickets after it,
    /// whether they name them or ask for their zone.
    fn taken(&mut self, seats: &[String]) {
        for seat in seats {
            self.free.remove(seat);
        }
        for free in self.free_in_zone.values_mut() {
            free.retain(|(_, _, seat)| !seats.contains(seat));
        }
    }

    /// Takes what `ticket` asks for, or says why not.
    pub(super) fn take(&mut self, plan: &Plan, ticket: &Ticket) -> Result<Bought, Refusal> {
        let quantity = i64::from(ticket.hold.quantity);
        match &ticket.choice {
            Choice::Seats(seats) => {
                let gone = self.gone(seats);
                if !gone.is_empty() {
                    return Err(Refusal::SeatTaken(gone));
                }
                self.taken(seats);
                Ok(Bought {
                    amount_cents: price_of_seats(plan, seats),
                    seats: Some(seats.clone()),
                    zone: None,
                })
            }
            Choice::Zone(zone) => {
                let Some((_, z)) = plan.zone(zone) else {
                    return Err(Refusal::ZoneSoldOut);
                };
                let amount_cents = quantity * z.price_cents;
                if z.kind == ZoneKind::General {
                    let left = self.left_in_zone.entry(zone.clone()).or_default();
                    if *left < quantity {
                        return Err(Refusal::ZoneSoldOut);
                    }
                    *left -= quantity;
                    return Ok(Bought {
                        amount_cents,
                        seats: None,
                        zone: Some(zone.clone()),
                    });
                }
                let free = self.free_in_zone.entry(zone.clone()).or_default();
                let picked = best_available(free, quantity as usize).ok_or(Refusal::ZoneSoldOut)?;
                self.taken(&picked);
                Ok(Bought {
                    amount_cents,
                    seats: Some(picked),
                    zone: None,
                })
            }
            Choice::Count => Ok(Bought::counted(ticket)),
        }
    }
}

/// What the seats cost, each at its zone's price.
fn price_of_seats(plan: &Plan, seats: &[String]) -> i64 {
    seats
        .iter()
        .filter_map(|seat| plan.locate(seat))
        .map(|at| plan.zones[at.zone].price_cents)
        .sum()
}

/// Which named seats are free, and which an order holds or bought.
async fn read_named(
    tx: &mut sqlx::PgConnection,
    event_id: i64,
    named: &[&str],
) -> sqlx::Result<(HashSet<String>, Vec<String>)> {
    let (mut free, mut owned) = (HashSet::new(), Vec::new());
    if named.is_empty() {
        return Ok((free, owned));
    }
    let states: Vec<(String, bool, bool)> = sqlx::query_as(&format!(
        "SELECT seat_id, order_id IS NOT NULL, {SEAT_FREE} FROM seats
         WHERE event_id = $1 AND seat_id = ANY($2)"
    ))
    .bind(event_id)
    .bind(named)
    .fetch_all(&mut *tx)
    .await?;
    for (seat, is_owned, is_free) in states {
        if is_owned {
            owned.push(seat);
        } else if is_free {
            free.insert(seat);
        }
    }
    Ok((free, owned))
}

/// The best free seats of each reserved zone asked for, front rows first: a
/// few times what the batch wants there, so that groups find room side by
/// side, and never the whole zone; and as many again as the batch names
/// there, which earlier tickets may take from the list.
async fn read_reserved(
    tx: &mut sqlx::PgConnection,
    event_id: i64,
    wants: &Wants<'_>,
) -> sqlx::Result<HashMap<String, Vec<(i32, i32, String)>>> {
    let mut free_in_zone: HashMap<String, Vec<(i32, i32, String)>> = HashMap::new();
    if wants.reserved.is_empty() {
        return Ok(free_in_zone);
    }
    let (zones, limits): (Vec<&str>, Vec<i64>) = wants
        .reserved
        .iter()
        .map(|(zone, wanted)| {
            let named = wants.named_in.get(zone).copied().unwrap_or_default();
            (*zone, wanted * 4 + 64 + named)
        })
        .unzip();
    let rows: Vec<(String, i32, i32, String)> = sqlx::query_as(&format!(
        "SELECT z.zone, s.row_number, s.seat_number, s.seat_id
         FROM unnest($2::text[], $3::int8[]) AS z(zone, wanted)
         CROSS JOIN LATERAL (
             SELECT row_number, seat_number, seat_id FROM seats
             WHERE event_id = $1 AND zone = z.zone AND {SEAT_FREE}
             ORDER BY row_number, seat_number
             LIMIT z.wanted
         ) AS s
         ORDER BY z.zone, s.row_number, s.seat_number"
    ))
    .bind(event_id)
    .bind(&zones)
    .bind(&limits)
    .fetch_all(&mut *tx)
    .await?;
    for (zone, row, number, seat) in rows {
        free_in_zone
            .entry(zone)
            .or_default()
            .push((row, number, seat));
    }
    Ok(free_in_zone)
}

/// Places left in each general-admission zone asked for: its capacity less
/// what live orders hold there.
async fn read_general(
    tx: &mut sqlx::PgConnection,
    event_id: i64,
    plan: &Plan,
    general: &[&str],
) -> sqlx::Result<HashMap<String, i64>> {
    let mut left_in_zone = HashMap::new();
    if general.is_empty() {
        return Ok(left_in_zone);
    }
    let live: Vec<(String, i64)> = sqlx::query_as(concat!(
        "SELECT zone, sum(quantity)::int8 FROM orders
         WHERE event_id = $1 AND zone = ANY($2) AND status IN ",
        holds_tickets!(),
        "
         GROUP BY zone"
    ))
    .bind(event_id)
    .bind(general)
    .fetch_all(&mut *tx)
    .await?;
    let live: HashMap<String, i64> = live.into_iter().collect();
    for &zone in general {
        if let Some((_, z)) = plan.zone(zone) {
            let taken = live.get(zone).copied().unwrap_or_default();
            left_in_zone.insert(zone.to_owned(), i64::from(z.capacity) - taken);
        }
    }
    Ok(left_in_zone)
}
