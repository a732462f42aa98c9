//! Seating plans: an event's zones, each either reserved (rows of numbered
//! seats, sold seat by seat) or general admission (a count).
//!
//! A seat's id is `ZONE-ROW-SEAT` (`A-3-14`), rows and seats counted from 1.
//! A plan is written three ways, all parsed into [`Plan`]:
//! - a compact spec, `A:10x20@9000,GA:2000@3000` (zone `A`: 10 rows of 20
//!   seats at 90.00; zone `GA`: 2,000 standing at 30.00);
//! - JSON or TOML, for irregular rows and blocked seats:
//!   `{"zones": [{"name": "B", "price_cents": 5000, "rows": [18, 20, 22],
//!   "blocked": ["B-1-1"]}, {"name": "GA", "price_cents": 3000, "capacity": 2000}]}`
//!   (`rows` is either a count, with `seats_per_row`, or each row's length).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::input::not_null;

/// The most places (seats and standing) one plan may have.
pub const MAX_PLACES: i64 = 200_000;
/// The most zones in one plan.
const MAX_ZONES: usize = 64;
/// The most seats in one row.
const MAX_ROW: i64 = 1_000;

/// A zone as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ZoneSpec {
    pub name: String,
    pub price_cents: i64,
    /// Reserved: a number of rows (with `seats_per_row`) or each row's length.
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub rows: Option<Rows>,
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub seats_per_row: Option<i64>,
    /// Reserved: seats not for sale.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<String>,
    /// General admission: how many.
    #[serde(
        default,
        deserialize_with = "not_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub capacity: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Rows {
    Count(i64),
    Lengths(Vec<i64>),
}

/// A plan as written (the body's `seating`, or a plan file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    pub zones: Vec<ZoneSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneKind {
    Reserved,
    General,
}

impl ZoneKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "RESERVED",
            Self::General => "GENERAL",
        }
    }
}

/// A checked zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub name: String,
    pub kind: ZoneKind,
    pub price_cents: i64,
    /// Reserved: each row's length. General: empty.
    pub rows: Vec<i32>,
    /// Reserved: seats not for sale.
    pub blocked: HashSet<String>,
    /// General: how many; reserved: seats for sale.
    pub capacity: i32,
}

/// A checked plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub zones: Vec<Zone>,
}

/// Where a seat is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatAt {
    /// Index into [`Plan::zones`].
    pub zone: usize,
    pub row: i32,
    pub number: i32,
}

/// A seat's id.
pub fn seat_id(zone: &str, row: i32, number: i32) -> String {
    format!("{zone}-{row}-{number}")
}

impl PlanSpec {
    /// Reads the compact spec `NAME:ROWSxSEATS@PRICE` (reserved) or
    /// `NAME:COUNT@PRICE` (general admission), comma separated.
    pub fn compact(spec: &str) -> Result<Self, String> {
        let zones = spec
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                let bad = || {
                    format!(
                        "zone {part:?} should read NAME:ROWSxSEATS@PRICE or NAME:COUNT@PRICE \
                         (A:10x20@9000, GA:2000@3000)"
                    )
                };
                let (name, rest) = part.split_once(':').ok_or_else(bad)?;
                let (size, price) = rest.split_once('@').ok_or_else(bad)?;
                let number = |text: &str| text.trim().parse::<i64>().map_err(|_| bad());
                let mut zone = ZoneSpec {
                    name: name.trim().to_owned(),
                    price_cents: number(price)?,
                    rows: None,
                    seats_per_row: None,
                    blocked: Vec::new(),
                    capacity: None,
                };
                match size.split_once(['x', 'X']) {
                    Some((rows, seats)) => {
                        zone.rows = Some(Rows::Count(number(rows)?));
                        zone.seats_per_row = Some(number(seats)?);
                    }
                    None => zone.capacity = Some(number(size)?),
                }
                Ok(zone)
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self { zones })
    }

    /// A plan in a JSON body: the compact spec as a string, or the full plan.
    pub fn from_json(value: serde_json::Value) -> Result<Self, String> {
        match value {
            serde_json::Value::String(spec) => Self::compact(&spec),
            full => serde_json::from_value(full).map_err(|error| {
                format!(
                    "seating must be a spec like \"A:10x20@9000\" or {{\"zones\": [...]}}: {error}"
                )
            }),
        }
    }

    /// Checks the plan; the error is a message for the person who wrote it.
    pub fn check(&self) -> Result<Plan, String> {
        if self.zones.is_empty() || self.zones.len() > MAX_ZONES {
            return Err(format!("a plan has 1 to {MAX_ZONES} zones"));
        }
        let mut names = HashSet::new();
        let mut places = 0i64;
        let mut zones = Vec::with_capacity(self.zones.len());
        for spec in &self.zones {
            let zone = spec.check()?;
            if !names.insert(zone.name.clone()) {
                return Err(format!("zone {:?} appears twice", zone.name));
            }
            places += i64::from(zone.capacity);
            zones.push(zone);
        }
        if !(1..=MAX_PLACES).contains(&places) {
            return Err(format!(
                "a plan has 1 to {MAX_PLACES} places for sale, this one {places}"
            ));
        }
        Ok(Plan { zones })
    }
}

impl ZoneSpec {
    fn check(&self) -> Result<Zone, String> {
        let name = &self.name;
        let well_named = (1..=16).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric());
        if !well_named {
            return Err(format!(
                "zone name {name:?} must be 1 to 16 letters or digits, starting with a letter"
            ));
        }
        if !(0..=100_000_000).contains(&self.price_cents) {
            return Err(format!(
                "zone {name}: price_cents must be between 0 and 100000000"
            ));
        }
        let in_range = |value, low, high, what| in_range(name, value, low, high, what);
        let (kind, rows) = match (&self.rows, self.seats_per_row, self.capacity) {
            (None, None, Some(capacity)) => {
                let capacity = in_range(capacity, 1, MAX_PLACES, "capacity")?;
                if !self.blocked.is_empty() {
                    return Err(format!(
                        "zone {name}: general admission has no seats to block"
                    ));
                }
                return Ok(Zone {
                    name: name.clone(),
                    kind: ZoneKind::General,
                    price_cents: self.price_cents,
                    rows: Vec::new(),
                    blocked: HashSet::new(),
                    capacity,
                });
            }
            (Some(Rows::Count(rows)), Some(seats), None) => {
                let rows = in_range(*rows, 1, MAX_ROW, "rows")?;
                let seats = in_range(seats, 1, MAX_ROW, "seats_per_row")?;
                (ZoneKind::Reserved, vec![seats; rows as usize])
            }
            (Some(Rows::Lengths(lengths)), None, None) if !lengths.is_empty() => {
                if lengths.len() as i64 > MAX_ROW {
                    return Err(format!("zone {name}: at most {MAX_ROW} rows"));
                }
                let rows = lengths
                    .iter()
                    .map(|&length| in_range(length, 1, MAX_ROW, "a row's length"))
                    .collect::<Result<Vec<_>, _>>()?;
                (ZoneKind::Reserved, rows)
            }
            _ => {
                return Err(format!(
                    "zone {name} needs either capacity (general admission), or rows with \
                     seats_per_row, or rows as a list of row lengths (reserved)"
                ))
            }
        };
        let blocked = self.check_blocked(&rows)?;
        let seats: i64 = rows.iter().map(|&r| i64::from(r)).sum();
        let capacity = in_range(
            seats - blocked.len() as i64,
            0,
            MAX_PLACES,
            "seats for sale",
        )?;
        Ok(Zone {
            name: name.clone(),
            kind,
            price_cents: self.price_cents,
            rows,
            blocked,
            capacity,
        })
    }

    /// The blocked seats, each checked to be a seat of the zone's `rows`.
    fn check_blocked(&self, rows: &[i32]) -> Result<HashSet<String>, String> {
        let name = &self.name;
        let mut blocked = HashSet::new();
        for seat in &self.blocked {
            let at = parse_seat(seat).filter(|(zone, row, number)| {
                zone == name && *row >= 1 && *row as usize <= rows.len() && *number >= 1 && {
                    *number <= rows[*row as usize - 1]
                }
            });
            if at.is_none() {
                return Err(format!(
                    "zone {name}: blocked seat {seat:?} is not in the zone"
                ));
            }
            blocked.insert(seat.clone());
        }
        Ok(blocked)
    }
}

/// `value`, if within `low..=high`; else why not, naming the zone and what
/// the value is.
fn in_range(zone: &str, value: i64, low: i64, high: i64, what: &str) -> Result<i32, String> {
    if (low..=high).contains(&value) {
        Ok(value as i32)
    } else {
        Err(format!(
            "zone {zone}: {what} must be between {low} and {high}, got {value}"
        ))
    }
}

/// Splits `A-3-14` into its zone, row and seat number; `None` unless the id
/// is written exactly so (`A-03-14` and `A-+3-14` are no seat's id).
pub fn parse_seat(seat: &str) -> Option<(&str, i32, i32)> {
    let (rest, number) = seat.rsplit_once('-')?;
    let (zone, row) = rest.rsplit_once('-')?;
    let (row, number) = (row.parse().ok()?, number.parse().ok()?);
    (seat_id(zone, row, number) == seat).then_some((zone, row, number))
}

/// The zone of a seat id (`A-3-14` → `A`).
pub fn zone_of(seat: &str) -> Option<&str> {
    parse_seat(seat).map(|(zone, _, _)| zone)
}

impl Plan {
    /// Places for sale: seats not blocked, and standing.
    pub fn places(&self) -> i32 {
        self.zones.iter().map(|zone| zone.capacity).sum()
    }

    pub fn zone(&self, name: &str) -> Option<(usize, &Zone)> {
        self.zones.iter().enumerate().find(|(_, z)| z.name == name)
    }

    /// Where `seat` is, if the plan has it (blocked or not).
    pub fn locate(&self, seat: &str) -> Option<SeatAt> {
        let (zone, row, number) = parse_seat(seat)?;
        let (index, zone) = self.zone(zone)?;
        let length = *zone.rows.get(usize::try_from(row).ok()?.checked_sub(1)?)?;
        (number >= 1 && number <= length).then_some(SeatAt {
            zone: index,
            row,
            number,
        })
    }

    pub fn is_blocked(&self, seat: &str) -> bool {
        self.locate(seat)
            .is_some_and(|at| self.zones[at.zone].blocked.contains(seat))
    }

    /// The one general-admission zone, where an order that names no zone
    /// buys; `None` if there are none or several.
    pub fn only_general(&self) -> Option<&Zone> {
        let mut general = self.zones.iter().filter(|z| z.kind == ZoneKind::General);
        match (general.next(), general.next()) {
            (Some(zone), None) => Some(zone),
            _ => None,
        }
    }

    /// The plan written back as JSON-able spec.
    pub fn spec(&self) -> PlanSpec {
        PlanSpec {
            zones: self
                .zones
                .iter()
                .map(|zone| match zone.kind {
                    ZoneKind::General => ZoneSpec {
                        name: zone.name.clone(),
                        price_cents: zone.price_cents,
                        rows: None,
                        seats_per_row: None,
                        blocked: Vec::new(),
                        capacity: Some(zone.capacity.into()),
                    },
                    ZoneKind::Reserved => {
                        let mut blocked: Vec<String> = zone.blocked.iter().cloned().collect();
                        blocked.sort();
                        ZoneSpec {
                            name: zone.name.clone(),
                            price_cents: zone.price_cents,
                            rows: Some(Rows::Lengths(
                                zone.rows.iter().map(|&r| i64::from(r)).collect(),
                            )),
                            seats_per_row: None,
                            blocked,
                            capacity: None,
                        }
                    }
                })
                .collect(),
        }
    }

    /// Every seat of the reserved zones, row by row: (id, zone, row, number, blocked).
    pub fn seats(&self) -> impl Iterator<Item = (String, &str, i32, i32, bool)> + '_ {
        self.zones
            .iter()
            .filter(|zone| zone.kind == ZoneKind::Reserved)
            .flat_map(|zone| {
                zone.rows.iter().enumerate().flat_map(move |(r, &length)| {
                    (1..=length).map(move |number| {
                        let row = r as i32 + 1;
                        let id = seat_id(&zone.name, row, number);
                        let blocked = zone.blocked.contains(&id);
                        (id, zone.name.as_str(), row, number, blocked)
                    })
                })
            })
    }
}

/// Picks `wanted` of `free` seats (all in one zone, sorted by row then
/// number): the first row with that many side by side, else the first free
/// ones. `None` if there are fewer free seats than wanted.
pub fn best_available(free: &[(i32, i32, String)], wanted: usize) -> Option<Vec<String>> {
    if wanted == 0 || free.len() < wanted {
        return None;
    }
    let mut run_start = 0;
    for i in 0..free.len() {
        let (row, number, _) = &free[i];
        let continues = i > run_start && {
            let (prev_row, prev_number, _) = &free[i - 1];
            prev_row == row && prev_number + 1 == *number
        };
        if !continues {
            run_start = i;
        }
        if i + 1 - run_start == wanted {
            return Some(free[run_start..=i].iter().map(|s| s.2.clone()).collect());
        }
    }
    Some(free[..wanted].iter().map(|s| s.2.clone()).collect())
}

/// A buyer's choice, in the order body: seats by id, a count in a zone, or
/// a count for the event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Choice {
    Count,
    Zone(String),
    Seats(Vec<String>),
}

/// One zone of `GET /events/{id}/seats`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ZoneMap {
    pub name: String,
    pub kind: String,
    pub price_cents: i64,
    pub capacity: i64,
    pub available: i64,
    /// Held by a PENDING order.
    pub held: i64,
    pub sold: i64,
    /// Freed by an order that ended unpaid, and not yet back on sale.
    pub returning: i64,
    /// Reserved: one string per row, one character per seat from seat 1:
    /// [`FREE`], [`HELD`], [`SOLD`], [`RETURNING`] or [`BLOCKED`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<String>,
}

/// The glyphs of a reserved row in a [`ZoneMap`], one a seat.
pub const FREE: char = '.';
pub const HELD: char = 'h';
pub const SOLD: char = 's';
pub const RETURNING: char = 'r';
pub const BLOCKED: char = 'x';

/// One seat as the database has it, for [`ZoneMap::of`].
pub struct SeatRow {
    pub zone: String,
    pub row: i32,
    pub number: i32,
    pub blocked: bool,
    /// The status of the order that holds it, if one does.
    pub status: Option<crate::OrderStatus>,
    /// Freed by an order that ended unpaid, not yet back on sale.
    pub returning: bool,
}

/// What live orders hold in a general-admission zone.
pub struct Standing {
    pub zone: String,
    pub held: i64,
    pub sold: i64,
}

impl ZoneMap {
    /// Every zone of `plan` as the seat map shows it, from its seats' rows
    /// and what orders hold in its standing zones.
    pub fn of(plan: &Plan, seats: Vec<SeatRow>, standing: Vec<Standing>) -> Vec<ZoneMap> {
        let mut maps: Vec<ZoneMap> = plan.zones.iter().map(ZoneMap::empty).collect();
        for seat in seats {
            let Some((index, _)) = plan.zone(&seat.zone) else {
                continue;
            };
            maps[index].mark(&seat);
        }
        for Standing { zone, held, sold } in standing {
            if let Some((index, _)) = plan.zone(&zone) {
                maps[index].held += held;
                maps[index].sold += sold;
            }
        }
        for map in &mut maps {
            map.available = map.capacity - map.held - map.sold - map.returning;
        }
        maps
    }

    /// A zone with every place free.
    fn empty(zone: &Zone) -> Self {
        Self {
            name: zone.name.clone(),
            kind: zone.kind.as_str().to_lowercase(),
            price_cents: zone.price_cents,
            capacity: zone.capacity.into(),
            available: zone.capacity.into(),
            held: 0,
            sold: 0,
            returning: 0,
            rows: zone
                .rows
                .iter()
                .map(|&length| FREE.to_string().repeat(length as usize))
                .collect(),
        }
    }

    /// Counts a seat and draws it in its row.
    fn mark(&mut self, seat: &SeatRow) {
        use crate::OrderStatus::{Confirmed, Pending};
        let state = match (seat.blocked, seat.status) {
            (true, _) => BLOCKED,
            (false, Some(Pending)) => HELD,
            (false, Some(Confirmed)) => SOLD,
            _ if seat.returning => RETURNING,
            _ => FREE,
        };
        match state {
            HELD => self.held += 1,
            SOLD => self.sold += 1,
            RETURNING => self.returning += 1,
            _ => {}
        }
        if let Some(line) = self.rows.get_mut(seat.row as usize - 1) {
            let at = seat.number as usize - 1;
            line.replace_range(at..at + 1, state.encode_utf8(&mut [0; 4]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compact_spec_reads_reserved_and_general_zones() {
        let plan = PlanSpec::compact("A:10x20@9000, B:30x40@5000,GA:2000@3000")
            .unwrap()
            .check()
            .unwrap();
        assert_eq!(plan.zones.len(), 3);
        assert_eq!(plan.zones[0].kind, ZoneKind::Reserved);
        assert_eq!(plan.zones[0].rows, vec![20; 10]);
        assert_eq!(plan.zones[2].kind, ZoneKind::General);
        assert_eq!(plan.places(), 200 + 1200 + 2000);
        assert_eq!(plan.seats().count(), 1400);
        assert_eq!(plan.only_general().unwrap().name, "GA");
        let at = plan.locate("A-3-14").unwrap();
        assert_eq!((at.zone, at.row, at.number), (0, 3, 14));
        for missing in [
            "A-11-1", "A-1-21", "A-0-1", "C-1-1", "GA-1-1", "A-1", "A--1-1", "A-03-14", "A-+3-14",
        ] {
            assert_eq!(plan.locate(missing), None, "{missing}");
        }
    }

    #[test]
    fn a_json_plan_has_irregular_rows_and_blocked_seats() {
        let spec: PlanSpec = serde_json::from_str(
            r#"{"zones": [{"name": "B", "price_cents": 5000, "rows": [2, 3],
                "blocked": ["B-2-3"]}]}"#,
        )
        .unwrap();
        let plan = spec.check().unwrap();
        assert_eq!(plan.places(), 4);
        assert!(plan.is_blocked("B-2-3"));
        assert!(!plan.is_blocked("B-2-2"));
        assert_eq!(plan.locate("B-1-3"), None, "row 1 has two seats");
        assert_eq!(
            plan.spec().check().unwrap(),
            plan,
            "written back, read again"
        );
    }

    #[test]
    fn bad_plans_are_refused_with_a_reason() {
        for (spec, says) in [
            ("A:10x20", "NAME:ROWSxSEATS@PRICE"),
            ("A:0x20@100", "rows must be between"),
            ("A:10x20@100,A:5@100", "appears twice"),
            ("1A:10@100", "zone name"),
            ("A:10@-1", "price_cents"),
            ("", "1 to 64 zones"),
            ("A:1000x1000@1", "seats for sale must be between"),
            ("A:400x400@1,B:400x400@1", "places for sale"),
        ] {
            let error = PlanSpec::compact(spec)
                .and_then(|plan| plan.check())
                .unwrap_err();
            assert!(error.contains(says), "{spec:?}: {error}");
        }
        let blocked_elsewhere: PlanSpec = serde_json::from_str(
            r#"{"zones": [{"name": "A", "price_cents": 1, "rows": 2, "seats_per_row": 2,
                "blocked": ["A-3-1"]}]}"#,
        )
        .unwrap();
        assert!(blocked_elsewhere
            .check()
            .unwrap_err()
            .contains("not in the zone"));
        let padded: PlanSpec = serde_json::from_str(
            r#"{"zones": [{"name": "A", "price_cents": 1, "rows": 2, "seats_per_row": 2,
                "blocked": ["A-01-1"]}]}"#,
        )
        .unwrap();
        assert!(
            padded.check().unwrap_err().contains("not in the zone"),
            "A-01-1 is not how A-1-1 is written"
        );
    }

    #[test]
    fn best_available_keeps_a_group_together_when_it_can() {
        let free: Vec<(i32, i32, String)> = [(1, 1), (1, 3), (1, 4), (2, 5), (2, 6), (2, 7)]
            .into_iter()
            .map(|(row, n)| (row, n, seat_id("A", row, n)))
            .collect();
        assert_eq!(best_available(&free, 2).unwrap(), ["A-1-3", "A-1-4"]);
        assert_eq!(
            best_available(&free, 3).unwrap(),
            ["A-2-5", "A-2-6", "A-2-7"]
        );
        assert_eq!(
            best_available(&free, 4).unwrap(),
            ["A-1-1", "A-1-3", "A-1-4", "A-2-5"],
            "no row has four side by side: the best four"
        );
        assert_eq!(best_available(&free, 7), None);
    }
}
