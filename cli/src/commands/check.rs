//! `flashtix check`: prove the invariants from Postgres and Redis.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use flashtix_model::report::Checked;

use flashtix_server::gate::reconcile::{self, Repair};
use flashtix_server::invariants::notices::Receivers;
use flashtix_server::invariants::{self, Invariant, Verdict};
use flashtix_server::orders::settled::wait_settled;
pub use flashtix_server::orders::settled::Settled;
use flashtix_server::runtime::config::ConnectionArgs;
use flashtix_server::runtime::db::Schema;
use flashtix_server::runtime::notify;
use flashtix_server::saga::broker::Topology;
use indicatif::ProgressBar;

use super::{Exit, Failure, Services};
use crate::{output, say};

#[derive(clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    connections: ConnectionArgs,
    /// Check only this event
    #[arg(long)]
    event: Option<i64>,
    /// After judging, repair Redis from Postgres when nothing is in flight: a
    /// stock that drifted is corrected; an event whose buyers' counts or
    /// idempotency entries differ is rebuilt. The drift found stays a FAIL in
    /// the report, with what was repaired
    #[arg(long)]
    repair: bool,
    /// Also write the report as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// A storm's history (one JSON attempt a line): also prove no order was
    /// lost; several files (the shards of one storm) are read as one
    #[arg(long, num_args = 1..)]
    history: Vec<PathBuf>,
    /// First wait, up to this long, until no order is PENDING (as a storm
    /// does after it): right after a buy its payment is still moving, and
    /// the check would say UNKNOWN
    #[arg(long, value_parser = flashtix_model::duration::parse, value_name = "DURATION")]
    settle: Option<Duration>,
    /// With --history: how far apart the clients' clocks and the database's
    /// may be; no answer is judged on a moment closer than this
    #[arg(long, value_parser = flashtix_model::duration::parse, value_name = "DURATION",
          default_value = "100ms", requires = "history")]
    clock_slack: Duration,
    #[command(flatten)]
    receivers: ReceiverArgs,
}

/// Where the notices' receivers keep what they got: with them, `check`
/// also proves what buyers and organizers were told.
#[derive(clap::Args)]
pub struct ReceiverArgs {
    /// The Maildir buyers' notices are delivered to: prove every mail true,
    /// one per ending, none missing
    #[arg(long, value_name = "DIR")]
    mail: Option<PathBuf>,
    /// The mail server the notices go through (`smtp://HOST:PORT`): a notice
    /// missing while it does not answer is UNKNOWN, not FAIL
    #[arg(long, value_name = "URL", requires = "mail")]
    smtp: Option<String>,
    /// The webhook receiver's record (a JSON delivery a line): prove every
    /// delivery signed, true and taken; the secret is read from
    /// --webhook-secret-file
    #[arg(long, value_name = "FILE", requires = "webhook_secret_file")]
    webhooks: Option<PathBuf>,
    /// The file holding the secret webhook deliveries are signed with
    #[arg(long, env = "FLASHTIX_WEBHOOK_SECRET_FILE", value_name = "FILE")]
    webhook_secret_file: Option<PathBuf>,
    /// The domain buyers are mailed at, as the notifications role was told
    #[arg(
        long,
        env = "FLASHTIX_BUYER_MAIL_DOMAIN",
        default_value = "buyers.flashtix.test"
    )]
    buyer_mail_domain: String,
    /// How long after its order ended a notice may still be missing
    /// (UNKNOWN until then, FAIL after)
    #[arg(long, value_parser = flashtix_model::duration::parse, value_name = "DURATION",
          default_value = "30s")]
    notice_grace: Duration,
}

impl ReceiverArgs {
    /// The receivers named, if any.
    pub fn resolve(&self) -> anyhow::Result<Option<Receivers>> {
        if self.mail.is_none() && self.webhooks.is_none() {
            return Ok(None);
        }
        let smtp = self.smtp.as_deref().map(notify::smtp_server).transpose()?;
        let webhooks = match (&self.webhooks, &self.webhook_secret_file) {
            (Some(record), Some(secret)) => {
                Some((record.clone(), notify::read_webhook_secret(secret)?))
            }
            _ => None,
        };
        Ok(Some(Receivers {
            maildir: self.mail.clone(),
            smtp,
            webhooks,
            buyer_mail_domain: self.buyer_mail_domain.clone(),
            grace: self.notice_grace,
        }))
    }
}

pub async fn run(args: CheckArgs) -> Exit {
    let history = if args.history.is_empty() {
        None
    } else {
        Some(
            flashtix_model::history::read_all(&args.history)
                .map_err(|e| Failure::usage(e.into()))?,
        )
    };
    let receivers = args.receivers.resolve().map_err(Failure::usage)?;
    let receivers = receivers.as_ref();
    let services = Services::connect(&args.connections).await?;
    something_to_check(&services, args.event.as_slice()).await?;
    let history = history.as_deref().map(|attempts| {
        say!(
            "judging {} attempts; clocks taken to agree within {} ms (--clock-slack)",
            attempts.len(),
            args.clock_slack.as_millis()
        );
        invariants::History {
            attempts,
            clock_slack: args.clock_slack,
        }
    });
    let (settled, mut report) = match args.settle {
        Some(limit) => {
            let (settled, report) =
                settle_and_prove(&services, history, receivers, args.event, limit, None).await?;
            (Some(settled), report)
        }
        None => (
            None,
            prove(&services, history, receivers, args.event).await?,
        ),
    };
    if args.repair {
        // Judged first: the drift found is the report's, with what was done.
        let repaired = repair(&services, args.event).await?;
        let drift = report
            .findings
            .iter_mut()
            .find(|f| f.invariant == Invariant::RedisAgrees);
        if let (false, Some(drift)) = (repaired.is_empty(), drift) {
            // A repair only happens when nothing is in flight and Redis held
            // still: what it corrected was drift, whatever the judging saw.
            drift.verdict = Verdict::Fail;
            drift.offending = drift.offending.max(repaired.len() as u64);
            drift
                .detail
                .push_str(&format!("; repaired: {}", repaired.join("; ")));
            report.verdict = Verdict::Fail;
        }
    }
    print_report(&report);
    let verdict = report.verdict;
    if let Some(path) = &args.json {
        let settled_seconds = match settled {
            Some(Settled::After(took)) => Some(took.as_secs_f64()),
            _ => None,
        };
        let checked = Checked {
            report,
            settled_seconds,
        };
        output::write_json(path, &checked)?;
    }
    Ok(exit_code(verdict))
}

/// Corrects Redis where it drifted from Postgres and nothing is in flight:
/// the stock, or an event's buyers' counts and keys rebuilt whole. Returns
/// what it did, an entry per event.
async fn repair(services: &Services, event: Option<i64>) -> anyhow::Result<Vec<String>> {
    let events = match event {
        Some(id) => vec![id],
        None => flashtix_server::catalogue::events::gated_ids(&services.pool).await?,
    };
    let mut repaired = Vec::new();
    for event_id in events {
        let stock = reconcile::repair_drift(&services.pool, &services.gate, event_id).await?;
        let entries = match stock {
            Repair::InSync => {
                reconcile::rebuild_drifted_entries(&services.pool, &services.gate, event_id).await?
            }
            other => other,
        };
        match entries {
            Repair::Repaired { from, to } => repaired.push(format!(
                "event {event_id}: Redis stock corrected from {from} to {to}"
            )),
            Repair::Rebuilt { reason } => repaired.push(format!(
                "event {event_id}: Redis rebuilt from Postgres ({reason})"
            )),
            Repair::Busy => say!("event {event_id}: orders in flight, not repaired"),
            Repair::InSync | Repair::Unseeded | Repair::Gone => {}
        }
    }
    Ok(repaired)
}

/// How a verdict ends the command: 0 PASS, 1 FAIL, 5 UNKNOWN (a job runner
/// must not take "could not be judged" for success).
pub fn exit_code(verdict: Verdict) -> ExitCode {
    ExitCode::from(match verdict {
        Verdict::Pass => 0,
        Verdict::Fail => 1,
        Verdict::Unknown => 5,
    })
}

/// Refuses, without changing anything, to check a namespace that holds no
/// sale of this build's schema, or an event it does not have: a PASS over
/// nothing would prove nothing.
pub async fn something_to_check(services: &Services, named: &[i64]) -> Result<(), Failure> {
    let namespace = &services.connections.namespace;
    let nothing = |why: String| Failure::usage(anyhow::anyhow!("nothing to check: {why}"));
    match flashtix_server::runtime::db::schema(&services.pool, namespace).await? {
        Schema::Current => {}
        Schema::Missing => {
            return Err(nothing(format!(
                "the namespace {namespace} holds no sale (seed one with `flashtix reset`, \
                 or name the sale's with --namespace)"
            )))
        }
        Schema::Behind(version) => {
            return Err(nothing(format!(
                "the sale in namespace {namespace} was made by an older flashtix (its schema \
                 is at migration {version}); start this version's `flashtix serve` on it once \
                 to bring it up to date, then check again"
            )))
        }
        Schema::Ahead(version) => {
            return Err(nothing(format!(
                "the sale in namespace {namespace} was made by a newer flashtix (migration \
                 {version}); check it with that version"
            )))
        }
    }
    let events: Vec<i64> = sqlx::query_scalar("SELECT id FROM events ORDER BY id")
        .fetch_all(&services.pool)
        .await
        .context("listing the sale's events")?;
    if events.is_empty() {
        return Err(nothing(format!(
            "the namespace {namespace} has no events (seed them with `flashtix reset`)"
        )));
    }
    match named.iter().find(|id| !events.contains(id)) {
        Some(id) => Err(nothing(format!(
            "the namespace {namespace} has no event {id} (its events: {})",
            shown(&events)
        ))),
        None => Ok(()),
    }
}

/// Event ids as a short list: `1, 2, 3` or `1, 2, 3, … (40 in all)`.
fn shown(events: &[i64]) -> String {
    const SHOWN: usize = 10;
    let mut list: Vec<String> = events.iter().take(SHOWN).map(i64::to_string).collect();
    if events.len() > SHOWN {
        list.push(format!("… ({} in all)", events.len()));
    }
    list.join(", ")
}

/// Waits, up to `limit`, until no order (of `event`, or of the sale) is
/// PENDING, and says how it went (`after`: what it waited after, if
/// anything). Then proves the sale, and proves it again while it says
/// UNKNOWN until `limit` from the start has passed: the last messages are
/// recorded as processed, and the last tickets come back to Redis, a moment
/// after the orders end. A sale still unsettled at the limit gets a
/// `settled` finding, UNKNOWN.
pub async fn settle_and_prove(
    services: &Services,
    history: Option<invariants::History<'_>>,
    receivers: Option<&Receivers>,
    event: Option<i64>,
    limit: Duration,
    after: Option<&str>,
) -> anyhow::Result<(Settled, invariants::Report)> {
    let started = tokio::time::Instant::now();
    let settled = settle(services, event, limit).await?;
    say_settled(settled, limit, after);
    let took = match settled {
        Settled::After(took) => took,
        Settled::Pending(pending) => {
            let mut report = prove(services, history, receivers, event).await?;
            report.add(unsettled(services, event, pending, limit, after).await?);
            return Ok((settled, report));
        }
    };
    // However late the orders ended, the moment after them is waited for.
    let deadline = started + limit.max(took + AFTER_SETTLING);
    loop {
        let report = prove(services, history, receivers, event).await?;
        let judged = report.verdict != Verdict::Unknown || !clears_with_time(&report);
        if judged || tokio::time::Instant::now() >= deadline {
            return Ok((settled, report));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// How long after the last order ended the check may still say UNKNOWN for
/// things in motion: a message recorded as processed, tickets going back to
/// Redis (a reconciler pass, then the return delay).
const AFTER_SETTLING: Duration = Duration::from_secs(10);

/// Whether every UNKNOWN of the report is of a kind that time settles:
/// messages not yet recorded, money still moving, Redis not yet quiet. Any
/// other (a history's order at its edge, a broker that cannot be asked)
/// waiting does not change.
fn clears_with_time(report: &invariants::Report) -> bool {
    const IN_MOTION: [Invariant; 5] = [
        Invariant::QueuesDrained,
        Invariant::NoDoubleCharge,
        Invariant::RedisAgrees,
        Invariant::NoticesSent,
        Invariant::WebhooksDelivered,
    ];
    report
        .findings
        .iter()
        .filter(|f| f.verdict == Verdict::Unknown)
        .all(|f| IN_MOTION.contains(&f.invariant))
}

/// Waits until no order (of `event`, or of the sale) is PENDING, or
/// `limit`, with a spinner on a terminal.
async fn settle(
    services: &Services,
    event: Option<i64>,
    limit: Duration,
) -> anyhow::Result<Settled> {
    let spinner = ProgressBar::new_spinner();
    let settled = wait_settled(&services.pool, event, limit, |pending, waited| {
        spinner.set_message(format!(
            "settling: {pending} orders PENDING after {:.1} s (limit {limit:?})",
            waited.as_secs_f64()
        ));
        spinner.tick();
    })
    .await
    .context("counting pending orders");
    spinner.finish_and_clear();
    settled
}

/// Says how [`settle`] went, counted from the end of `after` (a storm), or
/// from the start of the wait.
fn say_settled(settled: Settled, limit: Duration, after: Option<&str>) {
    match (settled, after) {
        (Settled::After(took), Some(after)) => say!(
            "settled: every order terminal {:.2} s after {after}",
            took.as_secs_f64()
        ),
        (Settled::After(took), None) => say!(
            "settled: every order terminal after {:.2} s",
            took.as_secs_f64()
        ),
        (Settled::Pending(pending), Some(after)) => {
            say!("not settled: {pending} orders still PENDING {limit:?} after {after}")
        }
        (Settled::Pending(pending), None) => {
            say!("not settled: {pending} orders still PENDING after {limit:?}")
        }
    }
}

/// The finding of a sale that did not settle within `limit`: `pending` of
/// its orders had not ended, so how the sale ends is not known yet.
async fn unsettled(
    services: &Services,
    event: Option<i64>,
    pending: i64,
    limit: Duration,
    after: Option<&str>,
) -> anyhow::Result<invariants::Finding> {
    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE $1::int8 IS NULL OR event_id = $1")
            .bind(event)
            .fetch_one(&services.pool)
            .await
            .context("counting orders")?;
    let after = after.map_or(String::new(), |after| format!(" after {after}"));
    Ok(invariants::Finding {
        invariant: Invariant::Settled,
        verdict: Verdict::Unknown,
        checked: orders as u64,
        offending: pending as u64,
        detail: format!(
            "{pending} orders still PENDING {limit:?}{after}: how they end is not known yet"
        ),
        examples: Vec::new(),
    })
}

/// Runs every invariant against the sale's services (the queues through a
/// connection of its own, UNKNOWN when RabbitMQ does not answer), and with
/// the notices' receivers, those of what buyers and organizers were told.
pub async fn prove(
    services: &Services,
    history: Option<invariants::History<'_>>,
    receivers: Option<&Receivers>,
    event: Option<i64>,
) -> anyhow::Result<invariants::Report> {
    let topology = Topology::new(services.connections.namespace.clone());
    let broker = flashtix_server::saga::broker::connect(&services.connections.amqp_url).await;
    let queues = match &broker {
        Ok(connection) => Ok((connection, &topology)),
        Err(error) => Err(error.to_string()),
    };
    let mut report =
        invariants::check(&services.pool, &services.gate, queues, history, event).await?;
    if let Some(receivers) = receivers {
        for finding in invariants::notices::check(&services.pool, receivers, event).await? {
            report.add(finding);
        }
    }
    Ok(report)
}

/// The findings' table and the verdict line.
pub fn print_report(report: &invariants::Report) {
    say!("{}", output::report_table(report));
    let verdict = match report.verdict {
        Verdict::Pass => "PASS: every invariant held",
        Verdict::Unknown => "UNKNOWN: nothing failed, but not everything could be judged",
        Verdict::Fail => "FAIL: an invariant was broken",
    };
    say!("{verdict}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(unknown: &[Invariant]) -> invariants::Report {
        let finding = |invariant, verdict| invariants::Finding {
            invariant,
            verdict,
            checked: 1,
            offending: 0,
            detail: String::new(),
            examples: Vec::new(),
        };
        let mut findings = vec![finding(Invariant::NoOversell, Verdict::Pass)];
        findings.extend(unknown.iter().map(|name| finding(*name, Verdict::Unknown)));
        invariants::Report {
            verdict: if unknown.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Unknown
            },
            findings,
        }
    }

    #[test]
    fn only_what_is_in_motion_is_waited_for() {
        assert!(clears_with_time(&report(&[])));
        assert!(clears_with_time(&report(&[
            Invariant::QueuesDrained,
            Invariant::RedisAgrees,
            Invariant::NoDoubleCharge,
        ])));
        assert!(!clears_with_time(&report(&[Invariant::NoLostOrder])));
        assert!(!clears_with_time(&report(&[
            Invariant::QueuesDrained,
            Invariant::Settled,
        ])));
    }
}
