//! The live progress bar of a storm.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use flashtix_model::history::Outcome;
use indicatif::{ProgressBar, ProgressStyle};

use super::engine::Progress;
use super::plan::StormPlan;

/// The live bar on a terminal (indicatif hides it elsewhere): purchases sent
/// of all (or seconds of the duration), the send rate over the last moment,
/// outcomes so far and the p99 from the intended send so far.
pub(super) fn progress_bar(plan: &StormPlan) -> ProgressBar {
    let (length, unit) = match (plan.sending.purchases, plan.sending.duration) {
        (Some(purchases), _) => (plan.sending.shard.share_of(purchases), "purchases"),
        (None, Some(duration)) => (duration.as_secs().max(1), "s"),
        (None, None) => (0, ""),
    };
    let bar = ProgressBar::new(length);
    let style = ProgressStyle::with_template(&format!(
        "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{msg}}"
    ))
    .expect("a valid template")
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// Redraws the bar four times a second until aborted.
pub(super) async fn show_progress(bar: ProgressBar, progress: Arc<Progress>, by_purchases: bool) {
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_sent = 0;
    loop {
        tick.tick().await;
        let sent = progress.sent.load(Relaxed);
        let rate = (sent - last_sent) as f64 * 4.0;
        last_sent = sent;
        let position = if by_purchases {
            sent
        } else {
            started.elapsed().as_secs()
        };
        update(&bar, &progress, position, &format!("{rate:.0} sent/s  "));
    }
}

pub(super) fn update(bar: &ProgressBar, progress: &Progress, position: u64, rate: &str) {
    bar.set_position(position);
    let p99 = progress.latency.percentile(99.0).map_or("-".into(), |p| {
        format!("{:.1} ms", p.as_secs_f64() * 1000.0)
    });
    bar.set_message(format!(
        "{rate}accepted {}  sold out {}  errors {}  p99 {p99}",
        progress.count(Outcome::Accepted),
        progress.count(Outcome::SoldOut),
        progress.failed(),
    ));
}
