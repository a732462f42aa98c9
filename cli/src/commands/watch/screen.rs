//! The dashboard's one screen, drawn from the [`Board`]: stock bars per
//! event (and zone), orders a second by answer, the order path's latency,
//! the saga's backlog, each process's health and a drill's faults. It fits
//! an 80×24 terminal; a taller one shows more events.

use std::time::{Duration, Instant};

use flashtix_model::seating::ZoneMap;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

use super::board::{Board, Health, RATE_WINDOW};
use super::scrape::Quantile;

/// What the screen says besides the board.
pub struct Context<'a> {
    pub namespace: &'a str,
    pub every: Duration,
    pub now: Instant,
    /// The wall clock, for the title.
    pub clock: String,
}

/// Processes shown one a line, up to this many: a whole sale.
const ONE_A_LINE: usize = flashtix_model::roles::PROCESSES.len();

/// The width of a line's name column.
const NAME: usize = 16;

const SOLD: Color = Color::Green;
const HELD: Color = Color::Yellow;
const LEFT: Color = Color::DarkGray;

/// The smallest screen drawn; a smaller one is asked to grow.
pub const SMALLEST: (u16, u16) = (40, 10);

pub fn draw(frame: &mut Frame, board: &Board, context: &Context) {
    let area = frame.area();
    if area.width < SMALLEST.0 || area.height < SMALLEST.1 {
        let ask = format!(
            "flashtix watch needs {}×{} at least ({}×{} here); 80×24 shows it all",
            SMALLEST.0, SMALLEST.1, area.width, area.height
        );
        let paragraph = Paragraph::new(ask).wrap(ratatui::widgets::Wrap { trim: true });
        frame.render_widget(paragraph, area);
        return;
    }
    let title = format!(" flashtix watch · {} ", context.namespace);
    let block = Block::bordered()
        .title(Line::from(title).style(Style::new().add_modifier(Modifier::BOLD)))
        .title(Line::from(format!(" {} ", context.clock)).right_aligned());
    let inner = block.inner(frame.area());
    frame.render_widget(block, frame.area());
    let width = usize::from(inner.width);
    let mut tail = Vec::new();
    tail.extend(orders(board, width));
    tail.extend(saga(board));
    tail.extend(processes(board, context, width));
    tail.extend(faults(board));
    tail.push(footer(board, context));
    let room = usize::from(inner.height).saturating_sub(tail.len());
    let mut lines = stock(board, width, room);
    lines.extend(tail);
    frame.render_widget(Paragraph::new(lines), inner);
}

fn heading(text: &str) -> Span<'static> {
    let style = Style::new().add_modifier(Modifier::BOLD);
    Span::styled(format!("{text:<NAME$}"), style)
}

/// The events' stock bars, as many lines as there is `room` for.
fn stock(board: &Board, width: usize, room: usize) -> Vec<Line<'static>> {
    let mut lines = vec![Line::from(vec![
        heading("Stock"),
        Span::styled("█ sold ", Style::new().fg(SOLD)),
        Span::styled("▒ held ", Style::new().fg(HELD)),
        Span::styled("░ left ", Style::new().fg(LEFT)),
        Span::raw("ret returning"),
    ])];
    if let Some(error) = &board.events_error {
        lines.push(Line::from(format!("  events not read: {error}")));
    }
    if board.events.is_empty() {
        lines.push(Line::from("  no events yet"));
    }
    for (id, watch) in &board.events {
        let name = format!("#{id} {}", watch.name);
        let Some(stock) = &watch.stock else {
            let waiting = if watch.streaming {
                "opening"
            } else {
                "no stream yet"
            };
            lines.push(Line::from(format!("{:<NAME$.NAME$} {waiting}", name)));
            continue;
        };
        let counts = Counts {
            sold: stock.sold,
            held: stock.held,
            left: stock.available,
            returning: stock.returning.unwrap_or(0),
            total: stock.total,
        };
        lines.push(bar_line(&name, &counts, width, !watch.streaming));
        for zone in stock.zones.iter().flatten() {
            lines.push(bar_line(
                &format!("  {}", zone.name),
                &zone_counts(zone),
                width,
                false,
            ));
        }
    }
    if room == 0 {
        return Vec::new();
    }
    if lines.len() > room {
        let hidden = lines.len() - room.saturating_sub(1);
        lines.truncate(room.saturating_sub(1));
        lines.push(Line::from(format!(
            "  … {hidden} more lines (a taller terminal shows them)"
        )));
    }
    while lines.len() < room {
        lines.push(Line::default());
    }
    lines
}

struct Counts {
    sold: i64,
    held: i64,
    left: i64,
    returning: i64,
    total: i64,
}

fn zone_counts(zone: &ZoneMap) -> Counts {
    Counts {
        sold: zone.sold,
        held: zone.held,
        left: zone.available,
        returning: zone.returning,
        total: zone.capacity,
    }
}

/// `name  ████▒▒░░░░  sold 12 held 3 left 85/100`.
fn bar_line(name: &str, counts: &Counts, width: usize, stale: bool) -> Line<'static> {
    let mut figures = format!(
        " sold {} held {} left {}/{}",
        counts.sold, counts.held, counts.left, counts.total
    );
    if counts.returning > 0 {
        figures.push_str(&format!(" ret {}", counts.returning));
    }
    if counts.left == 0 && counts.returning == 0 {
        figures.push_str(" SOLD OUT");
    }
    if stale {
        figures.push_str(" (stream cut)");
    }
    // A third of what is left after the name: every bar the same length.
    let bar = (width.saturating_sub(NAME + 1) / 3).max(4);
    let share = |count: i64| {
        let cells = count.max(0) as f64 / counts.total.max(1) as f64 * bar as f64;
        cells.round() as usize
    };
    let sold = share(counts.sold).min(bar);
    // Seats on their way back are neither sold nor for sale yet: drawn held.
    let held = share(counts.held + counts.returning).min(bar - sold);
    let left = bar - sold - held;
    Line::from(vec![
        Span::raw(format!("{name:<NAME$.NAME$} ")),
        Span::styled("█".repeat(sold), Style::new().fg(SOLD)),
        Span::styled("▒".repeat(held), Style::new().fg(HELD)),
        Span::styled("░".repeat(left), Style::new().fg(LEFT)),
        Span::raw(figures),
    ])
}

/// Orders a second by answer, and the order path's p50/p99.
fn orders(board: &Board, width: usize) -> Vec<Line<'static>> {
    let seconds = RATE_WINDOW.as_secs();
    let mut rates = vec![heading(&format!("Orders/s ({seconds} s)"))];
    let mut used = NAME;
    let shown = board.order_rates();
    if shown.iter().all(|(_, rate)| *rate == 0.0) {
        rates.push(Span::raw("none"));
    }
    for (outcome, rate) in shown.into_iter().filter(|(_, rate)| *rate > 0.0) {
        let text = format!("{outcome} {} ", per_second(rate));
        used += text.chars().count();
        if used > width {
            break;
        }
        let style = match outcome.as_str() {
            "accepted" => Style::new().fg(SOLD),
            "sold_out" | "seat_taken" => Style::new(),
            _ => Style::new().fg(HELD),
        };
        rates.push(Span::styled(text, style));
    }
    let latency = format!(
        "p50 {}  p99 {}  (POST /orders, routing to answer)",
        seconds_text(board.order_latency(0.5)),
        seconds_text(board.order_latency(0.99)),
    );
    vec![
        Line::from(rates),
        Line::from(vec![heading("Order path"), Span::raw(latency)]),
    ]
}

fn per_second(rate: f64) -> String {
    if rate >= 100.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.1}")
    }
}

fn seconds_text(quantile: Option<Quantile>) -> String {
    let time = |seconds: f64| {
        if seconds < 1.0 {
            format!("{:.1} ms", seconds * 1000.0)
        } else {
            format!("{seconds:.2} s")
        }
    };
    match quantile {
        None => "–".into(),
        Some(Quantile::At(seconds)) => time(seconds),
        Some(Quantile::Over(seconds)) => format!("> {}", time(seconds)),
    }
}

/// The saga's backlog: outbox, PENDING orders, the queues, dead letters.
fn saga(board: &Board) -> Vec<Line<'static>> {
    let backlog = board.backlog();
    let count = |value: Option<f64>| value.map_or("?".into(), |v| format!("{v:.0}"));
    let oldest = backlog
        .oldest_seconds
        .map_or("?".into(), |seconds| format!("{seconds:.1} s"));
    let first = format!(
        "outbox {}  pending orders {}  oldest pending {oldest}",
        count(backlog.outbox),
        count(backlog.pending),
    );
    let mut queues = vec![heading("Queues")];
    match &board.queues {
        None => queues.push(Span::raw("not read yet")),
        Some(Err(error)) => queues.push(Span::styled(
            format!("RabbitMQ: {error}"),
            Style::new().fg(Color::Red),
        )),
        Some(Ok(depths)) => {
            let mut dead = 0;
            for (queue, depth) in depths {
                match (queue.strip_suffix(".dead"), depth) {
                    (Some(_), Some(depth)) => dead += depth,
                    (Some(_), None) => {}
                    (None, Some(depth)) => {
                        queues.push(Span::raw(format!("{} {depth}  ", short(queue))))
                    }
                    (None, None) => queues.push(Span::raw(format!("{} missing  ", short(queue)))),
                }
            }
            let style = if dead > 0 {
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
            } else {
                Style::new()
            };
            queues.push(Span::styled(format!("dead letters {dead}"), style));
        }
    }
    vec![
        Line::from(vec![heading("Saga"), Span::raw(first)]),
        Line::from(queues),
    ]
}

/// A process's roles in few words: `all`, `all but api`, or the roles.
fn roles_of(roles: &[String]) -> String {
    let missing: Vec<&str> = flashtix_model::Role::ALL
        .iter()
        .map(|role| role.name())
        .filter(|role| !roles.iter().any(|r| r == role))
        .collect();
    match missing.as_slice() {
        [] => "all".to_owned(),
        [one] if roles.len() > 1 => format!("all but {one}"),
        _ => roles.join("+"),
    }
}

/// A queue by the last word of its topic (`order.settled`: `settled`), so
/// every queue of the sale fits on one line of 80.
fn short(queue: &str) -> &str {
    queue.rsplit('.').next().unwrap_or(queue)
}

/// Each process: a dot for its health, its address, its roles, and why not
/// when it is not well. One a line for a whole sale (seven), two beyond.
fn processes(board: &Board, context: &Context, width: usize) -> Vec<Line<'static>> {
    let column = if board.processes.len() > ONE_A_LINE {
        width.saturating_sub(NAME) / 2
    } else {
        width.saturating_sub(NAME)
    };
    let cells: Vec<Vec<Span<'static>>> = board
        .processes
        .iter()
        .map(|process| {
            let health = process.health(context.now, context.every);
            let (color, state) = match &health {
                Health::Up => (Color::Green, "up".to_owned()),
                Health::NotReady(why) => (Color::Yellow, format!("not ready: {why}")),
                Health::Down(why) => (Color::Red, format!("down: {why}")),
                Health::Unknown => (Color::DarkGray, "no answer yet".to_owned()),
            };
            let roles = roles_of(&process.roles);
            let address = process.url.trim_start_matches("http://");
            let text = [address, &roles, &state]
                .iter()
                .filter(|part| !part.is_empty())
                .fold(String::new(), |text, part| text + " " + part);
            let text: String = text.chars().take(column.saturating_sub(2)).collect();
            vec![
                Span::styled("●", Style::new().fg(color)),
                Span::raw(format!("{text:<0$}", column.saturating_sub(1))),
            ]
        })
        .collect();
    let per_line = if board.processes.len() > ONE_A_LINE {
        2
    } else {
        1
    };
    let mut lines = Vec::new();
    for (index, row) in cells.chunks(per_line).enumerate() {
        let label = if index == 0 { "Processes" } else { "" };
        let mut spans = vec![heading(label)];
        spans.extend(row.iter().flatten().cloned());
        lines.push(Line::from(spans));
    }
    if lines.is_empty() {
        lines.push(Line::from(vec![
            heading("Processes"),
            Span::raw("none given"),
        ]));
    }
    lines
}

/// A drill's faults: those in force, else the last one.
fn faults(board: &Board) -> Vec<Line<'static>> {
    let Some(read) = &board.faults else {
        return Vec::new();
    };
    let text = match read {
        Err(error) => format!("not read: {error}"),
        Ok(windows) if windows.is_empty() => "none yet".into(),
        Ok(windows) => {
            let open: Vec<String> = windows
                .iter()
                .filter(|window| window.to.is_none())
                .map(|window| format!("{} since {:.1} s", window.label, window.from))
                .collect();
            if open.is_empty() {
                let last = windows.last().expect("not empty");
                format!(
                    "none in force; last: {} {:.1}–{:.1} s ({} in all)",
                    last.label,
                    last.from,
                    last.until(last.from),
                    windows.len()
                )
            } else {
                format!("IN FORCE: {}", open.join(", "))
            }
        }
    };
    let style = if text.starts_with("IN FORCE") {
        Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
    } else {
        Style::new()
    };
    vec![Line::from(vec![
        heading("Faults"),
        Span::styled(text, style),
    ])]
}

fn footer(board: &Board, context: &Context) -> Line<'static> {
    let open = board
        .events
        .values()
        .filter(|watch| watch.streaming)
        .count();
    Line::from(Span::styled(
        format!(
            "q quits · scraped every {:?} · {open}/{} stock streams open",
            context.every,
            board.events.len()
        ),
        Style::new().fg(Color::DarkGray),
    ))
}
