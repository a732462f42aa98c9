//! `--report FILE.html`: one page that opens offline — no script, no font, no
//! network — with the storm's charts drawn as inline SVG and its tables.
//!
//! Charts: throughput by outcome over time, latency (p50, p99) over time, and
//! the latency distribution; on a seated sale, the seat maps
//! ([`seatmap`]). Time windows (a drill's faults) can be shaded.

use std::fmt::Write;

use flashtix_model::history::Outcome;
use hdrhistogram::Histogram;

use super::document::{Percentiles, SecondRow, StormDocument};
use super::report::{fairness_cells, FAIRNESS_HEADER};

mod seatmap;

/// A stretch of the storm to shade on the time charts (a drill's fault).
pub use flashtix_chaos::windows::Window;

/// What the page shows.
pub struct Page<'a> {
    pub title: String,
    /// The `--json` document of the storm.
    pub document: &'a StormDocument,
    /// Every attempt's latency from its intended send, µs.
    pub from_intended: &'a Histogram<u64>,
    /// Every attempt's service time, µs.
    pub service: &'a Histogram<u64>,
    pub windows: &'a [Window],
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 300.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 20.0;
const MARGIN_TOP: f64 = 20.0;
const MARGIN_BOTTOM: f64 = 45.0;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:960px;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}\
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}\
.PASS{color:#2e7d32;font-weight:bold}.FAIL{color:#c62828;font-weight:bold}.UNKNOWN{color:#ef6c00;font-weight:bold}\
svg text{font:11px system-ui,sans-serif;fill:#444}.legend span{display:inline-block;margin-right:1em}\
.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-.1em}";

fn color(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Accepted => "#2e7d32",
        Outcome::Replayed => "#81c784",
        Outcome::SoldOut => "#1565c0",
        Outcome::SeatTaken => "#0097a7",
        Outcome::LimitExceeded => "#6a1b9a",
        Outcome::Rejected => "#8d6e63",
        Outcome::InProgress => "#90a4ae",
        Outcome::Error => "#c62828",
        Outcome::Unreadable => "#795548",
        Outcome::Timeout => "#ef6c00",
        Outcome::ConnectError => "#ad1457",
    }
}

impl Page<'_> {
    pub fn render(&self) -> String {
        let doc = self.document;
        let mut html = String::new();
        let _ = write!(
            html,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
             <style>{STYLE}</style></head><body><h1>{title}</h1><p>{model}; started {started}, \
             {elapsed:.1} s of sending; {attempts} attempts.</p>",
            title = escape(&self.title),
            model = escape(&doc.model),
            started = doc.started_at.to_rfc3339(),
            elapsed = doc.elapsed_seconds,
            attempts = doc.attempts,
        );
        if let Some(warning) = &doc.schedule.warning {
            let _ = write!(html, "<p class=\"FAIL\">{}</p>", escape(warning));
        }
        if let Some(check) = &doc.check {
            let _ = write!(
                html,
                "<p>Invariants: <span class=\"{v}\">{v}</span></p>",
                v = check.verdict.name()
            );
        }
        html += "<h2>Throughput by outcome (answers per second)</h2>";
        html += &self.legend();
        html += &self.throughput_chart();
        html += "<h2>Latency from the intended send, per second of answers</h2>";
        html += "<div class=\"legend\"><span><i style=\"background:#1565c0\"></i>p50</span>\
                 <span><i style=\"background:#c62828\"></i>p99</span></div>";
        html += &self.latency_chart();
        html += "<h2>Latency distribution (every attempt)</h2>";
        html += "<div class=\"legend\"><span><i style=\"background:#c62828\"></i>from the intended send</span>\
                 <span><i style=\"background:#1565c0\"></i>service time (from the actual send)</span></div>";
        html += &self.distribution_chart();
        html += &seatmap::section(&doc.seating);
        html += &self.tables();
        html += "</body></html>\n";
        html
    }

    fn legend(&self) -> String {
        let mut legend = String::from("<div class=\"legend\">");
        for outcome in self.present() {
            let _ = write!(
                legend,
                "<span><i style=\"background:{}\"></i>{}</span>",
                color(outcome),
                outcome.name()
            );
        }
        legend + "</div>"
    }

    /// The outcomes that occurred, in the tables' order.
    fn present(&self) -> Vec<Outcome> {
        Outcome::ALL
            .into_iter()
            .filter(|o| self.document.count(*o) > 0)
            .collect()
    }

    fn seconds(&self) -> &[SecondRow] {
        &self.document.seconds
    }

    fn throughput_chart(&self) -> String {
        let seconds = self.seconds();
        let totals: Vec<f64> = seconds.iter().map(|s| s.answers() as f64).collect();
        let top = nice_ceiling(totals.iter().copied().fold(1.0, f64::max));
        let mut chart = Chart::new(seconds.len().max(1) as f64, Scale::Linear { max: top });
        chart.shade(self.windows);
        let width = chart.x(1.0) - chart.x(0.0);
        for (second, s) in seconds.iter().enumerate() {
            let mut stacked = 0.0;
            for outcome in self.present() {
                let count = s.count(outcome) as f64;
                if count > 0.0 {
                    let (low, high) = (chart.y(stacked), chart.y(stacked + count));
                    let _ = write!(
                        chart.body,
                        "<rect x=\"{:.1}\" y=\"{high:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{second} s: {count} {}</title></rect>",
                        chart.x(second as f64) + width * 0.05,
                        width * 0.9,
                        low - high,
                        color(outcome),
                        outcome.name()
                    );
                    stacked += count;
                }
            }
        }
        chart.finish("seconds", "answers / s", linear_ticks(top))
    }

    fn latency_chart(&self) -> String {
        let seconds = self.seconds();
        let series = |figure: fn(&SecondRow) -> f64| -> Vec<(f64, f64)> {
            seconds
                .iter()
                .enumerate()
                .filter(|(_, s)| s.answers() > 0)
                .map(|(i, s)| (i as f64 + 0.5, figure(s)))
                .collect()
        };
        let (p50, p99) = (series(|s| s.p50_ms), series(|s| s.p99_ms));
        let top = p99.iter().map(|p| p.1).fold(1.0, f64::max);
        let scale = Scale::log_ms(top);
        let mut chart = Chart::new(seconds.len().max(1) as f64, scale);
        chart.shade(self.windows);
        chart.line(&p50, "#1565c0");
        chart.line(&p99, "#c62828");
        chart.finish("seconds", "ms (log)", scale.ticks())
    }

    fn distribution_chart(&self) -> String {
        // Buckets at 1-2-5 steps of milliseconds; the count of attempts in each.
        let top_ms = self.from_intended.max().max(self.service.max()) as f64 / 1000.0;
        let mut edges = vec![0.0];
        for exponent in -2.. {
            if *edges.last().unwrap() >= top_ms {
                break;
            }
            for factor in [1.0, 2.0, 5.0] {
                edges.push(factor * 10f64.powi(exponent));
            }
        }
        let micros: Vec<u64> = edges.iter().map(|ms| (ms * 1000.0) as u64).collect();
        let mut buckets = vec![(0u64, 0u64); edges.len() - 1];
        for (histogram, intended) in [(self.from_intended, true), (self.service, false)] {
            for value in histogram.iter_recorded() {
                // The bucket whose lower edge is the last at or below the value.
                let above = micros.partition_point(|&edge| edge <= value.value_iterated_to());
                let bucket = &mut buckets[above.saturating_sub(1).min(edges.len() - 2)];
                *(if intended {
                    &mut bucket.0
                } else {
                    &mut bucket.1
                }) += value.count_at_value();
            }
        }
        // From the first bucket with anything in it.
        let first = buckets.iter().position(|&(a, b)| a + b > 0).unwrap_or(0);
        let (edges, buckets) = (&edges[first..], &buckets[first..]);
        let top = nice_ceiling(
            buckets
                .iter()
                .map(|&(a, b)| a.max(b) as f64)
                .fold(1.0, f64::max),
        );
        let mut chart = Chart::new(buckets.len().max(1) as f64, Scale::Linear { max: top });
        let width = chart.x(1.0) - chart.x(0.0);
        for (i, (intended, service)) in buckets.iter().enumerate() {
            for (j, (n, fill)) in [(*intended, "#c62828"), (*service, "#1565c0")]
                .into_iter()
                .enumerate()
            {
                let (x, y) = (
                    chart.x(i as f64) + width * (0.1 + 0.4 * j as f64),
                    chart.y(n as f64),
                );
                let _ = write!(
                    chart.body,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\"><title>{}–{} ms: {n}</title></rect>",
                    width * 0.4,
                    chart.y(0.0) - y,
                    edges[i],
                    edges[i + 1]
                );
            }
            let _ = write!(
                chart.body,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                chart.x(i as f64 + 1.0),
                HEIGHT - MARGIN_BOTTOM + 14.0,
                short(edges[i + 1])
            );
        }
        chart.finish_without_x_ticks("ms (bucket upper edge)", "attempts", linear_ticks(top))
    }

    fn tables(&self) -> String {
        let doc = self.document;
        let mut html = String::from(
            "<h2>Outcomes</h2><table><tr><th>outcome</th><th>attempts</th><th>per second</th></tr>",
        );
        let elapsed = doc.elapsed_seconds.max(1e-9);
        for outcome in self.present() {
            let n = doc.count(outcome);
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{n}</td><td>{:.0}</td></tr>",
                outcome.name(),
                n as f64 / elapsed
            );
        }
        html += "</table><h2>Latency (ms)</h2><table><tr><th>outcome</th><th>measured from</th>";
        for (name, _) in Percentiles::NAMED {
            let _ = write!(html, "<th>{name}</th>");
        }
        html += "</tr>";
        for outcome in self.present() {
            for (by_class, from) in [
                (&doc.latency_from_intended_ms, "intended send"),
                (&doc.service_time_ms, "actual send"),
            ] {
                let Some(percentiles) = by_class.get(outcome.name()) else {
                    continue;
                };
                let _ = write!(html, "<tr><td>{}</td><td>{from}</td>", outcome.name());
                for value in percentiles.values() {
                    let _ = write!(html, "<td>{value:.2}</td>");
                }
                html += "</tr>";
            }
        }
        html += "</table>";
        if !doc.fairness.is_empty() {
            html += "<h2>Sell-out and fairness (from the history)</h2><table><tr>";
            for name in FAIRNESS_HEADER {
                let _ = write!(html, "<th>{}</th>", escape(name));
            }
            html += "</tr>";
            for event in &doc.fairness {
                html += "<tr>";
                for cell in fairness_cells(event) {
                    let _ = write!(html, "<td>{}</td>", escape(&cell));
                }
                html += "</tr>";
            }
            html += "</table>";
        }
        if let Some(check) = &doc.check {
            html +=
                "<h2>Invariants</h2><table><tr><th>invariant</th><th>verdict</th><th>checked</th>\
                     <th>offending</th><th>detail</th></tr>";
            for f in &check.findings {
                let verdict = f.verdict.name();
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td class=\"{verdict}\">{verdict}</td><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
                    escape(f.invariant.name()),
                    f.checked,
                    f.offending,
                    escape(&f.detail)
                );
            }
            html += "</table>";
        }
        html
    }
}

#[derive(Clone, Copy)]
enum Scale {
    Linear {
        max: f64,
    },
    /// Powers of ten from `min` to `max`.
    Log {
        min: f64,
        max: f64,
    },
}

impl Scale {
    fn log_ms(top: f64) -> Self {
        Scale::Log {
            min: 0.1,
            max: 10f64.powf(top.max(1.0).log10().ceil()),
        }
    }

    /// Where `value` sits, 0 (bottom) to 1 (top).
    fn fraction(self, value: f64) -> f64 {
        match self {
            Scale::Linear { max } => value / max,
            Scale::Log { min, max } => {
                (value.max(min).log10() - min.log10()) / (max.log10() - min.log10())
            }
        }
    }

    fn ticks(self) -> Vec<f64> {
        match self {
            Scale::Linear { max } => linear_ticks(max),
            Scale::Log { min, max } => (min.log10().round() as i32..=max.log10().round() as i32)
                .map(|exponent| 10f64.powi(exponent))
                .collect(),
        }
    }
}

/// An SVG chart: x from 0 to `x_max`, y on `scale`.
struct Chart {
    x_max: f64,
    scale: Scale,
    body: String,
}

impl Chart {
    fn new(x_max: f64, scale: Scale) -> Self {
        Self {
            x_max,
            scale,
            body: String::new(),
        }
    }

    fn x(&self, value: f64) -> f64 {
        MARGIN_LEFT + value / self.x_max * (WIDTH - MARGIN_LEFT - MARGIN_RIGHT)
    }

    fn y(&self, value: f64) -> f64 {
        HEIGHT - MARGIN_BOTTOM - self.scale.fraction(value) * (HEIGHT - MARGIN_TOP - MARGIN_BOTTOM)
    }

    fn shade(&mut self, windows: &[Window]) {
        for window in windows {
            let (from, to) = (
                self.x(window.from.max(0.0)),
                self.x(window.until(self.x_max).min(self.x_max)),
            );
            let _ = write!(
                self.body,
                "<rect x=\"{from:.1}\" y=\"{MARGIN_TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#ffe0b2\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                (to - from).max(1.0),
                HEIGHT - MARGIN_TOP - MARGIN_BOTTOM,
                from + 3.0,
                MARGIN_TOP + 12.0,
                escape(&window.label)
            );
        }
    }

    fn line(&mut self, points: &[(f64, f64)], stroke: &str) {
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", self.x(x), self.y(y)))
            .collect();
        let _ = write!(
            self.body,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{stroke}\" stroke-width=\"2\"/>",
            path.join(" ")
        );
    }

    fn finish(mut self, x_label: &str, y_label: &str, y_ticks: Vec<f64>) -> String {
        let step = linear_ticks(self.x_max)
            .get(1)
            .copied()
            .unwrap_or(1.0)
            .max(1.0);
        let mut at = 0.0;
        while at <= self.x_max {
            let _ = write!(
                self.body,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{at}</text>",
                self.x(at),
                HEIGHT - MARGIN_BOTTOM + 14.0
            );
            at += step;
        }
        self.finish_without_x_ticks(x_label, y_label, y_ticks)
    }

    fn finish_without_x_ticks(self, x_label: &str, y_label: &str, y_ticks: Vec<f64>) -> String {
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\">"
        );
        for tick in y_ticks {
            let y = self.y(tick);
            let _ = write!(
                svg,
                "<line x1=\"{MARGIN_LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                WIDTH - MARGIN_RIGHT,
                MARGIN_LEFT - 6.0,
                y + 4.0,
                short(tick)
            );
        }
        svg += &self.body;
        let _ = write!(
            svg,
            "<line x1=\"{MARGIN_LEFT}\" x2=\"{MARGIN_LEFT}\" y1=\"{MARGIN_TOP}\" y2=\"{bottom}\" stroke=\"#888\"/>\
             <line x1=\"{MARGIN_LEFT}\" x2=\"{right}\" y1=\"{bottom}\" y2=\"{bottom}\" stroke=\"#888\"/>\
             <text x=\"{middle:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{x_label}</text>\
             <text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">{y_label}</text></svg>",
            HEIGHT - 8.0,
            (MARGIN_TOP + HEIGHT - MARGIN_BOTTOM) / 2.0,
            bottom = HEIGHT - MARGIN_BOTTOM,
            right = WIDTH - MARGIN_RIGHT,
            middle = (MARGIN_LEFT + WIDTH - MARGIN_RIGHT) / 2.0,
        );
        svg
    }
}

/// The smallest 1, 2 or 5 times a power of ten at or above `value`.
fn nice_ceiling(value: f64) -> f64 {
    let power = 10f64.powf(value.max(1e-9).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|f| f * power)
        .find(|&v| v >= value)
        .unwrap_or(10.0 * power)
}

/// Five or so evenly spaced ticks from 0 to `max`.
fn linear_ticks(max: f64) -> Vec<f64> {
    let step = nice_ceiling(max / 5.0);
    (0..)
        .map(|i| i as f64 * step)
        .take_while(|&t| t <= max * 1.0001)
        .collect()
}

/// 1500 → "1.5k", 0.1 → "0.1".
fn short(value: f64) -> String {
    if value >= 1e6 {
        format!("{}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{}k", value / 1e3)
    } else {
        format!("{}", (value * 1000.0).round() / 1000.0)
    }
}

pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::storm::engine::Storm;
    use crate::commands::storm::fairness::EventFairness;
    use crate::commands::storm::record::Recorder;
    use crate::commands::storm::report::Summary;
    use flashtix_server::invariants::{Finding, Invariant, Report, Verdict};
    use std::time::Duration;

    #[test]
    fn the_page_stands_alone_and_shows_what_happened() {
        // Second 0: 3 accepted and 1 sold out; second 1: 3 sold out.
        let mut recorder = Recorder::default();
        for (n, outcome) in [
            Outcome::Accepted,
            Outcome::Accepted,
            Outcome::Accepted,
            Outcome::SoldOut,
            Outcome::SoldOut,
            Outcome::SoldOut,
            Outcome::SoldOut,
        ]
        .into_iter()
        .enumerate()
        {
            let at = Duration::from_millis(300 * n as u64);
            recorder.sent_on_time(outcome, at, Duration::from_millis(2));
        }
        let storm = Storm {
            recorder,
            started_at: chrono::Utc::now(),
            elapsed: Duration::from_secs(2),
            cpu: None,
        };
        let summary = Summary::new(&storm, "open, 10/s <constant>".into(), Some(10.0), false);
        let mut document = summary.document();
        document.fairness = vec![EventFairness {
            event_id: 1,
            purchases: 7,
            winners: 3,
            first_arrivals_won: 3,
            rank_correlation: Some(1.0),
            sold_out_seconds: Some(0.61),
            accepted_per_second_while_stock_lasted: None,
        }];
        document.check = Some(Report {
            verdict: Verdict::Pass,
            findings: vec![Finding {
                invariant: Invariant::NoOversell,
                verdict: Verdict::Pass,
                checked: 1,
                offending: 0,
                detail: "a & b".into(),
                examples: Vec::new(),
            }],
        });
        let windows = [Window {
            from: 0.5,
            to: Some(1.0),
            label: "kill api".into(),
        }];
        let page = Page {
            title: "storm".into(),
            document: &document,
            from_intended: &summary.all_from_intended,
            service: &summary.all_service,
            windows: &windows,
        }
        .render();

        for forbidden in ["<script", "http://", "https://"] {
            let outside_namespace = page.replace("http://www.w3.org/2000/svg", "");
            assert!(!outside_namespace.contains(forbidden), "{forbidden}");
        }
        assert_eq!(page.matches("<svg").count(), 3, "three charts");
        assert!(page.contains("open, 10/s &lt;constant&gt;"), "escaped");
        assert!(page.contains("a &amp; b"));
        assert!(page.contains("<title>0 s: 3 accepted</title>"));
        assert!(page.contains("<title>1 s: 3 sold_out</title>"));
        assert!(page.contains(">kill api</text>"), "the window is shaded");
        assert!(
            !page.contains(">error</span>"),
            "absent outcomes stay out of the legend"
        );
        assert!(page.contains("class=\"PASS\""));
        assert!(
            page.contains("<td>3 of the first 3</td><td>+1.00</td><td>0.61 s</td><td>-</td>"),
            "the fairness row as the terminal shows it"
        );
        assert!(page.contains("<th>arrival→win rank correlation</th>"));
        let bucketed: u64 = page
            .split(" ms: ")
            .skip(1)
            .map(|rest| rest[..rest.find('<').unwrap()].parse::<u64>().unwrap())
            .sum();
        assert_eq!(bucketed, 14, "every attempt in one bucket, both measures");
    }

    #[test]
    fn scales_and_ticks_are_round() {
        assert_eq!(nice_ceiling(730.0), 1000.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(
            linear_ticks(1000.0),
            [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]
        );
        assert_eq!(
            Scale::log_ms(370.0).ticks(),
            [0.1, 1.0, 10.0, 100.0, 1000.0]
        );
        assert_eq!(short(1500.0), "1.5k");
    }
}
