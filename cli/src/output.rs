//! Human and machine output: comfy-tables on stdout, JSON files on request.
//! `--json -` puts the JSON on stdout instead, and then everything written
//! for people ([`say!`](crate::say)) goes to stderr, so that stdout is one
//! JSON document a program can read.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use anyhow::Context;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, Color, ContentArrangement, Table};
use flashtix_server::catalogue::events::Event;
use flashtix_server::invariants::{Report, Verdict};

static JSON_ON_STDOUT: AtomicBool = AtomicBool::new(false);

/// Whether `path` names stdout (`-`).
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Called once with the command's `--json`: if it is `-`, what is said for
/// people goes to stderr from then on.
pub fn json_goes_to(path: Option<&Path>) {
    JSON_ON_STDOUT.store(path.is_some_and(is_stdout), Relaxed);
}

/// Whether the human output goes to stderr (stdout carries JSON).
pub fn human_on_stderr() -> bool {
    JSON_ON_STDOUT.load(Relaxed)
}

/// `println!` for people: to stdout, or to stderr under `--json -`.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        if $crate::output::human_on_stderr() {
            eprintln!($($arg)*)
        } else {
            println!($($arg)*)
        }
    };
}

/// Writes `value` as pretty JSON to `path`, or to stdout if it is `-`.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    if is_stdout(path) {
        to_stdout(text.as_bytes()).context("writing the JSON to stdout")
    } else {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

/// Writes `bytes` to stdout whole, and flushes them.
pub fn to_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes).and_then(|()| stdout.flush())
}

/// A table in the CLI's one style.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    table
}

pub fn events_table(events: &[Event]) -> Table {
    let mut table = table(&[
        "id",
        "name",
        "tickets",
        "available",
        "price",
        "max/user",
        "hold",
    ]);
    for e in events {
        table.add_row(vec![
            e.id.to_string(),
            e.name.clone(),
            e.total_tickets.to_string(),
            e.available_tickets.to_string(),
            format!("{}.{:02}", e.price_cents / 100, e.price_cents % 100),
            e.max_per_user.to_string(),
            format!("{}s", e.hold_seconds),
        ]);
    }
    table
}

fn verdict_cell(verdict: Verdict) -> Cell {
    match verdict {
        Verdict::Pass => Cell::new("PASS").fg(Color::Green),
        Verdict::Unknown => Cell::new("UNKNOWN").fg(Color::Yellow),
        Verdict::Fail => Cell::new("FAIL").fg(Color::Red),
    }
}

pub fn report_table(report: &Report) -> Table {
    let mut table = table(&["invariant", "verdict", "checked", "offending", "detail"]);
    for f in &report.findings {
        let mut detail = f.detail.clone();
        for example in &f.examples {
            detail.push_str("\n  ");
            detail.push_str(example);
        }
        table.add_row(vec![
            Cell::new(f.invariant.name()),
            verdict_cell(f.verdict),
            Cell::new(f.checked),
            Cell::new(f.offending),
            Cell::new(detail),
        ]);
    }
    table
}
