//! One screen of the dashboard drawn off the terminal (`--print`): into
//! ratatui's in-memory backend, then written as plain text or as an SVG
//! picture of the terminal, colours kept.

use std::fmt::Write as _;

use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};
use ratatui::Terminal;

use super::board::Board;
use super::screen::{self, Context};

/// The screen as `width`×`height` cells.
pub fn render(board: &Board, context: &Context, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("a test backend");
    terminal
        .draw(|frame| screen::draw(frame, board, context))
        .expect("drawing in memory cannot fail");
    terminal.backend().buffer().clone()
}

/// Each row's characters, trailing blanks cut.
pub fn text(buffer: &Buffer) -> String {
    let width = usize::from(buffer.area.width);
    let mut text = String::new();
    for row in buffer.content().chunks(width) {
        let line: String = row.iter().map(|cell| cell.symbol()).collect();
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

const CELL_WIDTH: f64 = 8.4;
const LINE_HEIGHT: f64 = 18.0;
const BACKGROUND: &str = "#1e1e1e";
const FOREGROUND: &str = "#d4d4d4";

/// The screen as an SVG: a dark terminal, one `<text>` a row, a run of
/// cells of one colour a `<tspan>` placed at its column.
pub fn svg(buffer: &Buffer) -> String {
    let (columns, rows) = (buffer.area.width, buffer.area.height);
    let (width, height) = (
        f64::from(columns) * CELL_WIDTH + 16.0,
        f64::from(rows) * LINE_HEIGHT + 16.0,
    );
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\" \
         font-size=\"14\">\n<rect width=\"100%\" height=\"100%\" rx=\"6\" fill=\"{BACKGROUND}\"/>\n"
    );
    for (y, row) in buffer.content().chunks(usize::from(columns)).enumerate() {
        let baseline = 8.0 + (y as f64 + 0.8) * LINE_HEIGHT;
        let _ = write!(svg, "<text y=\"{baseline:.1}\" xml:space=\"preserve\">");
        let mut x = 0;
        while x < row.len() {
            let style = (row[x].fg, row[x].modifier.contains(Modifier::BOLD));
            let run = row[x..]
                .iter()
                .take_while(|cell| (cell.fg, cell.modifier.contains(Modifier::BOLD)) == style)
                .count();
            let text: String = row[x..x + run].iter().map(|cell| cell.symbol()).collect();
            if !text.trim().is_empty() {
                let weight = if style.1 { " font-weight=\"bold\"" } else { "" };
                let _ = write!(
                    svg,
                    "<tspan x=\"{:.1}\" fill=\"{}\"{weight}>{}</tspan>",
                    8.0 + x as f64 * CELL_WIDTH,
                    colour(style.0),
                    escape(&text)
                );
            }
            x += run;
        }
        svg.push_str("</text>\n");
    }
    svg.push_str("</svg>\n");
    svg
}

fn colour(color: Color) -> &'static str {
    match color {
        Color::Green => "#6ccb5f",
        Color::Yellow => "#e5c07b",
        Color::Red => "#f0616d",
        Color::DarkGray => "#808890",
        _ => FOREGROUND,
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
