//! The screen drawn from boards made by hand: what an operator reads off it.

use std::time::{Duration, Instant};

use flashtix_chaos::windows::Window;
use flashtix_model::seating::ZoneMap;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::board::{Board, EventWatch, Process, StockNow};
use super::picture;
use super::scrape::Scrape;
use super::screen::Context;

fn context(now: Instant) -> Context<'static> {
    Context {
        namespace: "flashtix",
        every: Duration::from_secs(1),
        now,
        clock: "12:00:00".into(),
    }
}

fn stock(total: i64, available: i64, held: i64) -> StockNow {
    StockNow {
        version: 3,
        total,
        available,
        held,
        sold: total - available - held,
        sold_out_at: None,
        returning: None,
        zones: None,
    }
}

fn scrape(accepted: u32, sold_out: u32, pending: u32) -> Scrape {
    Scrape::parse(&format!(
        "flashtix_orders_total{{outcome=\"accepted\"}} {accepted}\n\
         flashtix_orders_total{{outcome=\"sold_out\"}} {sold_out}\n\
         flashtix_outbox_depth 2\n\
         flashtix_orders_pending {pending}\n\
         flashtix_orders_pending_oldest_seconds 1.25\n"
    ))
}

/// A sale mid-storm: one event a third sold, one sold out, two processes
/// of which one stopped answering, a queue with dead letters, a fault on.
fn busy_board(start: Instant) -> Board {
    let mut api = Process::new("http://127.0.0.1:8081".into());
    api.roles = vec!["api".into()];
    api.scraped(start, scrape(100, 0, 5));
    api.scraped(start + Duration::from_secs(2), scrape(500, 1000, 40));
    let mut relay = Process::new("http://127.0.0.1:8082".into());
    relay.roles = vec!["relay".into()];
    relay.error = Some("refused".into());
    let mut board = Board {
        processes: vec![api, relay],
        queues: Some(Ok(vec![
            ("payment.requested".into(), Some(7)),
            ("payment.requested.dead".into(), Some(2)),
            ("payment.captured".into(), None),
        ])),
        faults: Some(Ok(vec![Window {
            label: "kill relay".into(),
            from: 4.0,
            to: None,
        }])),
        ..Board::default()
    };
    board.events.insert(
        1,
        EventWatch {
            name: "Arena night".into(),
            stock: Some(stock(300, 180, 20)),
            streaming: true,
        },
    );
    let mut seated = stock(10, 0, 1);
    seated.sold = 6;
    seated.returning = Some(3);
    seated.zones = Some(vec![ZoneMap {
        name: "Balcony".into(),
        kind: "reserved".into(),
        price_cents: 5000,
        capacity: 10,
        available: 0,
        held: 1,
        sold: 6,
        returning: 3,
        rows: Vec::new(),
    }]);
    board.events.insert(
        3,
        EventWatch {
            name: "Opera".into(),
            stock: Some(seated),
            streaming: true,
        },
    );
    board.events.insert(
        2,
        EventWatch {
            name: "Small club".into(),
            stock: Some(stock(50, 0, 0)),
            streaming: true,
        },
    );
    board
}

fn line_with<'a>(screen: &'a str, start: &str) -> &'a str {
    screen
        .lines()
        .find(|line| line.contains(start))
        .unwrap_or_else(|| panic!("no line with {start:?} in\n{screen}"))
}

#[test]
fn an_80_by_24_screen_tells_stock_rates_backlog_health_and_faults() {
    let start = Instant::now();
    let board = busy_board(start);
    let now = start + Duration::from_secs(2);
    let screen = picture::text(&picture::render(&board, &context(now), 80, 24));
    assert_eq!(screen.lines().count(), 24);
    assert!(
        screen.lines().all(|line| line.chars().count() <= 80),
        "{screen}"
    );

    let arena = line_with(&screen, "#1 Arena night");
    assert!(arena.contains("sold 100 held 20 left 180/300"), "{arena}");
    // 100 of 300 sold: a third of the bar, held a fifteenth.
    let sold = arena.matches('█').count();
    let bar = sold + arena.matches('▒').count() + arena.matches('░').count();
    assert_eq!((sold * 3 + 1) / bar, 1, "{arena}");
    assert!(!arena.contains("SOLD OUT"), "{arena}");
    assert!(line_with(&screen, "#2 Small club").contains("left 0/50 SOLD OUT"));
    let zone = line_with(&screen, "  Balcony");
    assert!(zone.contains("sold 6 held 1 left 0/10 ret 3"), "{zone}");
    assert!(
        !zone.contains("SOLD OUT"),
        "seats still coming back: {zone}"
    );

    let rates = line_with(&screen, "Orders/s");
    assert!(rates.contains("sold_out 500 accepted 200"), "{rates}");
    let saga = line_with(&screen, "Saga");
    assert!(
        saga.contains("outbox 2  pending orders 40  oldest pending 1.2 s"),
        "{saga}"
    );
    let queues = line_with(&screen, "Queues");
    assert!(
        queues.contains("requested 7  captured missing  dead letters 2"),
        "{queues}"
    );
    let processes = line_with(&screen, "Processes");
    assert!(processes.contains("127.0.0.1:8081 api up"), "{processes}");
    assert!(
        screen.contains("127.0.0.1:8082 relay down: refused"),
        "{screen}"
    );
    assert!(line_with(&screen, "Faults").contains("IN FORCE: kill relay since 4.0 s"));
    assert!(line_with(&screen, "q quits").contains("3/3 stock streams open"));
}

#[test]
fn events_past_the_screen_are_counted_and_an_svg_draws_the_same_screen() {
    let start = Instant::now();
    let mut board = busy_board(start);
    for id in 4..30 {
        let watch = EventWatch {
            name: format!("Show {id}"),
            stock: Some(stock(10, 10, 0)),
            streaming: false,
        };
        board.events.insert(id, watch);
    }
    let buffer = picture::render(&board, &context(start), 80, 24);
    let screen = picture::text(&buffer);
    assert_eq!(screen.lines().count(), 24);
    assert!(
        screen.contains("more lines (a taller terminal shows them)"),
        "{screen}"
    );
    assert!(line_with(&screen, "#4 Show 4").contains("(stream cut)"));
    // Everything below the stock still shows.
    line_with(&screen, "q quits");
    let tall = picture::text(&picture::render(&board, &context(start), 80, 50));
    line_with(&tall, "#29 Show 29");

    let svg = picture::svg(&buffer);
    assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
    assert_eq!(svg.matches("<text ").count(), 24);
    assert!(svg.contains("#1 Arena night"), "{svg}");
    assert!(svg.contains("fill=\"#f0616d\""), "a fault in force is red");
}

#[test]
fn q_esc_and_ctrl_c_quit_other_keys_do_not() {
    let key = |code, modifiers| KeyEvent::new(code, modifiers);
    assert!(super::quits(&key(KeyCode::Char('q'), KeyModifiers::NONE)));
    assert!(super::quits(&key(KeyCode::Esc, KeyModifiers::NONE)));
    assert!(super::quits(&key(
        KeyCode::Char('c'),
        KeyModifiers::CONTROL
    )));
    assert!(!super::quits(&key(KeyCode::Char('c'), KeyModifiers::NONE)));
    assert!(!super::quits(&key(KeyCode::Char('x'), KeyModifiers::NONE)));
}

#[test]
fn a_screen_size_is_columns_by_rows_within_reason() {
    assert_eq!(super::size("80x24"), Ok((80, 24)));
    assert_eq!(super::size("120x40"), Ok((120, 40)));
    for bad in ["80", "80x", "x24", "10x24", "80x2", "eightyx24"] {
        assert!(super::size(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_terminal_too_small_is_asked_to_grow_and_nothing_breaks() {
    let start = Instant::now();
    let board = busy_board(start);
    // A single cell cannot say it, but must not break either.
    picture::render(&board, &context(start), 1, 1);
    for (width, height) in [(20, 5), (39, 30), (80, 9)] {
        let screen = picture::text(&picture::render(&board, &context(start), width, height));
        assert!(screen.contains("needs"), "{width}×{height}: {screen}");
    }
    // The smallest drawn: the stock gives way, the rest stays.
    let smallest = picture::text(&picture::render(&board, &context(start), 40, 10));
    assert!(
        smallest.contains("Orders/s") && smallest.contains("q quits"),
        "{smallest}"
    );
    let short = picture::text(&picture::render(&board, &context(start), 40, 14));
    assert!(
        short.contains("#1 Arena") && short.contains("more lines"),
        "{short}"
    );
}

#[test]
fn a_process_that_stops_answering_stops_counting_toward_the_rates() {
    let start = Instant::now();
    let mut board = busy_board(start);
    assert!(!board.order_rates().is_empty());
    board.processes[0].failed("refused".into());
    assert!(board.order_rates().is_empty(), "no phantom traffic");
    assert_eq!(board.order_latency(0.99), None);
}
