//! The report's seat maps: each reserved zone as a grid of its seats, row 1
//! at the top, each seat the storm sold and still held or sold after it
//! coloured by when its order was accepted (early dark, late light), the rest
//! by their state: a seat whose order ended unpaid is on its way back to sale
//! or free again, and drawn so. The maps are read once the sale has settled
//! (when the storm waits for it; without its check, at its last answer).

use std::fmt::Write;

use super::super::document::ZoneSales;
use super::escape;

/// The colours of a seat sold at the start of the storm, halfway and at the
/// end of the selling.
const EARLY: [u8; 3] = [0x4a, 0x14, 0x8c];
const MIDDLE: [u8; 3] = [0xc2, 0x18, 0x5b];
const LATE: [u8; 3] = [0xff, 0xb3, 0x00];
/// Held or sold, but not by this storm's buyers.
const TAKEN_BEFORE: &str = "#616161";
const FREE: &str = "#e0e0e0";
/// Sold in the storm, free again after it: its order ended unpaid.
const RELEASED: &str = "#9ccc65";
/// Freed by an order that ended unpaid, not yet back on sale.
const RETURNING: &str = "#4dd0e1";
const BLOCKED: &str = "#ffffff";
/// The widest a map is drawn, and the sizes a seat may take in it.
const WIDTH: f64 = 900.0;
const LARGEST_SEAT: f64 = 10.0;
const SMALLEST_SEAT: f64 = 2.0;

/// The seat maps of the reserved zones among `zones`; empty if there are
/// none.
pub fn section(zones: &[ZoneSales]) -> String {
    let zones: Vec<&ZoneSales> = zones
        .iter()
        .filter(|sales| !sales.zone.rows.is_empty())
        .collect();
    if zones.is_empty() {
        return String::new();
    }
    let last_sale = zones
        .iter()
        .flat_map(|sales| sales.sold_at_seconds.values().copied())
        .fold(0.0, f64::max);
    let mut html = String::from("<h2>Seat maps (when each seat sold)</h2>");
    let _ = write!(
        html,
        "<div class=\"legend\"><span><i style=\"background:{}\"></i>sold at 0 s</span>\
         <span><i style=\"background:{}\"></i>{:.1} s</span>\
         <span><i style=\"background:{}\"></i>{:.1} s</span>\
         <span><i style=\"background:{TAKEN_BEFORE}\"></i>taken before the storm</span>\
         <span><i style=\"background:{RETURNING}\"></i>unpaid, on its way back to sale</span>\
         <span><i style=\"background:{RELEASED}\"></i>sold, then free again (unpaid)</span>\
         <span><i style=\"background:{FREE}\"></i>free</span>\
         <span><i style=\"background:{BLOCKED};outline:1px solid #bbb\"></i>not for sale</span></div>",
        hex(EARLY),
        hex(MIDDLE),
        last_sale / 2.0,
        hex(LATE),
        last_sale,
    );
    for zone in zones {
        html += &zone_map(zone, last_sale);
    }
    html
}

fn zone_map(sales: &ZoneSales, last_sale: f64) -> String {
    let name = sales.zone.name.as_str();
    let rows = &sales.zone.rows;
    let widest = rows
        .iter()
        .map(|row| row.chars().count())
        .max()
        .unwrap_or(1);
    let seat = (WIDTH / widest as f64).clamp(SMALLEST_SEAT, LARGEST_SEAT);
    let (width, height) = (seat * widest as f64, seat * rows.len() as f64);
    let mut svg = format!(
        "<h3>Event {event}, zone {name}</h3><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" \
         height=\"{height:.0}\" role=\"img\" aria-label=\"zone {name}\">",
        name = escape(name),
        event = sales.event_id,
    );
    for (r, row) in rows.iter().enumerate() {
        for (n, state) in row.chars().enumerate() {
            let id = format!("{name}-{}-{}", r + 1, n + 1);
            let fill = match (sales.sold_at_seconds.get(&id).copied(), state) {
                (_, 'r') => RETURNING.to_owned(),
                (Some(_), '.') => RELEASED.to_owned(),
                (Some(at), _) => hex(ramp(at / last_sale.max(f64::EPSILON))),
                (None, 'x') => BLOCKED.to_owned(),
                (None, 'h' | 's') => TAKEN_BEFORE.to_owned(),
                (None, _) => FREE.to_owned(),
            };
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\" \
                 stroke=\"#fff\" stroke-width=\"{:.1}\"><title>{}</title></rect>",
                n as f64 * seat,
                r as f64 * seat,
                seat,
                seat,
                seat / 8.0,
                escape(&id),
            );
        }
    }
    svg + "</svg>"
}

/// The colour of a seat sold at `fraction` (0 to 1) of the selling.
fn ramp(fraction: f64) -> [u8; 3] {
    let fraction = fraction.clamp(0.0, 1.0);
    let (from, to, t) = if fraction < 0.5 {
        (EARLY, MIDDLE, fraction * 2.0)
    } else {
        (MIDDLE, LATE, fraction * 2.0 - 1.0)
    };
    std::array::from_fn(|i| {
        (f64::from(from[i]) + (f64::from(to[i]) - f64::from(from[i])) * t).round() as u8
    })
}

fn hex([r, g, b]: [u8; 3]) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

#[cfg(test)]
mod tests {
    use flashtix_model::seating::ZoneMap;

    use super::*;

    fn zone(name: &str, rows: &[&str], sold_at: &[(&str, f64)]) -> ZoneSales {
        ZoneSales {
            event_id: 1,
            zone: ZoneMap {
                name: name.into(),
                kind: if rows.is_empty() {
                    "general"
                } else {
                    "reserved"
                }
                .into(),
                price_cents: 100,
                capacity: 12,
                available: 0,
                held: 0,
                sold: 0,
                returning: 0,
                rows: rows.iter().map(|row| row.to_string()).collect(),
            },
            orders_in_storm: 0,
            tickets_in_storm: 0,
            sold_out_seconds: None,
            sold_at_seconds: sold_at.iter().map(|(s, at)| (s.to_string(), *at)).collect(),
        }
    }

    fn fill_of<'a>(svg: &'a str, seat: &str) -> &'a str {
        let title = format!("<title>{seat}</title>");
        let at = svg.find(&title).unwrap_or_else(|| panic!("{seat} drawn"));
        let rect = &svg[svg[..at].rfind("<rect").unwrap()..at];
        let fill = &rect[rect.find("fill=\"").unwrap() + 6..];
        &fill[..fill.find('"').unwrap()]
    }

    #[test]
    fn each_seat_is_coloured_by_when_it_sold_or_by_its_state() {
        let zones = [
            zone(
                "A",
                &["ss.x", "hs..", "rr.."],
                &[
                    ("A-1-1", 0.0),
                    ("A-1-2", 1.0),
                    ("A-2-2", 2.0),
                    ("A-2-3", 1.5),
                    ("A-3-1", 0.5),
                ],
            ),
            zone("FLOOR", &[], &[]),
        ];
        let html = section(&zones);
        assert_eq!(
            html.matches("<svg").count(),
            1,
            "a map for the reserved zone only"
        );
        assert_eq!(html.matches("<rect").count(), 12, "one square a seat");
        assert_eq!(fill_of(&html, "A-1-1"), hex(EARLY));
        assert_eq!(
            fill_of(&html, "A-1-2"),
            hex(MIDDLE),
            "halfway through the selling"
        );
        assert_eq!(fill_of(&html, "A-2-2"), hex(LATE));
        assert_eq!(fill_of(&html, "A-2-1"), TAKEN_BEFORE);
        assert_eq!(fill_of(&html, "A-1-3"), FREE);
        assert_eq!(
            fill_of(&html, "A-2-3"),
            RELEASED,
            "sold in the storm, its order ended unpaid"
        );
        assert_eq!(
            fill_of(&html, "A-3-1"),
            RETURNING,
            "sold in the storm, unpaid, on its way back"
        );
        assert_eq!(
            fill_of(&html, "A-3-2"),
            RETURNING,
            "on its way back from an order before the storm"
        );
        assert_eq!(fill_of(&html, "A-1-4"), BLOCKED);
        assert!(html.contains("2.0 s"), "the legend's last sale");
        assert_eq!(section(&zones[1..]), "", "no reserved seats, no section");
    }
}
