//! `flashtix reset`: wipe the namespace's sale and seed fresh events.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use flashtix_model::seating::PlanSpec;
use flashtix_server::catalogue::events::{Event, NewEvent, NewEventRequest};
use flashtix_server::runtime::config::{database_is_local, ConnectionArgs, Namespace};
use flashtix_server::sale::{self, SaleSpec};

use super::{Exit, Failure, Services};
use crate::{output, say};

#[derive(clap::Args)]
pub struct ResetArgs {
    #[command(flatten)]
    connections: ConnectionArgs,
    #[command(flatten)]
    sale: SaleArgs,
    /// Confirm wiping a database that is not on this machine
    #[arg(long)]
    yes: bool,
    /// Also write the seeded events as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print only the new event ids, one a line (for scripts)
    #[arg(long)]
    print_ids: bool,
}

/// The sale to seed: flags of `reset`, or the `[sale]` table of a scenario file
/// (same names, same defaults).
#[derive(Debug, Clone, clap::Args, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SaleArgs {
    /// Events to seed
    #[arg(long, default_value_t = 1)]
    pub events: u32,
    /// Tickets per event
    #[arg(long, default_value_t = 1000)]
    pub tickets: i64,
    /// Price of one ticket, in cents
    #[arg(long, default_value_t = 5000)]
    pub price_cents: i64,
    /// Most tickets one buyer may hold per event
    #[arg(long, default_value_t = 4)]
    pub max_per_user: i64,
    /// How long an unpaid order holds its tickets
    #[arg(long, default_value_t = 300)]
    pub hold_seconds: i64,
    /// Name of the seeded events
    #[arg(long, default_value = "Flash sale")]
    pub name: String,
    /// A seating plan instead of --tickets and --price-cents: zones like
    /// 'A:10x20@9000,GA:2000@3000' (zone A: 10 rows of 20 seats at 90.00; GA:
    /// 2,000 standing at 30.00), or a .json or .toml plan file
    #[arg(long, value_name = "SPEC|FILE", conflicts_with_all = ["tickets", "price_cents"])]
    pub seating: Option<String>,
    /// Where the events' organizer is told of each order's end: every
    /// outcome is POSTed there, signed with the webhook secret
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,
}

impl Default for SaleArgs {
    /// The flags' defaults, so a scenario's `[sale]` reads like `reset`.
    fn default() -> Self {
        super::parse_flags(&[]).expect("the defaults parse")
    }
}

impl SaleArgs {
    fn spec(&self) -> Result<SaleSpec, Failure> {
        if !(1..=1000).contains(&self.events) {
            return Err(Failure::usage(anyhow!(
                "events must be between 1 and 1000, got {}",
                self.events
            )));
        }
        let seating = self
            .seating
            .as_deref()
            .map(read_plan)
            .transpose()
            .map_err(Failure::usage)?
            .map(|plan| serde_json::to_value(plan).expect("a plan is JSON"));
        let counted = seating.is_none();
        let event = NewEvent::parse(NewEventRequest {
            name: self.name.clone(),
            total_tickets: counted.then_some(self.tickets),
            price_cents: counted.then_some(self.price_cents),
            max_per_user: Some(self.max_per_user),
            hold_seconds: Some(self.hold_seconds),
            seating,
            webhook_url: self.webhook_url.clone(),
        })
        .map_err(|message| Failure::usage(anyhow!(message)))?;
        Ok(SaleSpec {
            events: self.events,
            event,
        })
    }
}

/// A plan from a `.json` or `.toml` file, or the compact spec itself.
fn read_plan(given: &str) -> anyhow::Result<PlanSpec> {
    let path = std::path::Path::new(given);
    let extension = path.extension().and_then(|e| e.to_str());
    match extension {
        Some("json" | "toml") => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the seating plan {given}"))?;
            let plan = if extension == Some("json") {
                serde_json::from_str(&text).map_err(anyhow::Error::from)
            } else {
                toml::from_str(&text).map_err(anyhow::Error::from)
            };
            plan.with_context(|| format!("reading the seating plan {given}"))
        }
        _ => PlanSpec::compact(given).map_err(|message| anyhow!(message)),
    }
}

pub async fn run(args: ResetArgs) -> Exit {
    if args.print_ids && args.json.as_deref().is_some_and(output::is_stdout) {
        return Err(Failure::usage(anyhow!(
            "--print-ids and --json - both write to stdout: choose one"
        )));
    }
    let (namespace, events) = seed(&args.connections, &args.sale, args.yes).await?;
    if args.print_ids {
        // For scripts: on stdout, whatever else is said.
        for event in &events {
            println!("{}", event.id);
        }
    } else {
        print_seeded(&namespace, &events);
    }
    if let Some(path) = &args.json {
        output::write_json(path, &events)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Wipes the namespace's sale and seeds `sale`; refuses a database elsewhere
/// unless `yes`. Returns the namespace and the new events.
pub async fn seed(
    connections: &ConnectionArgs,
    sale: &SaleArgs,
    yes: bool,
) -> Result<(Namespace, Vec<Event>), Failure> {
    let spec = sale.spec()?;
    let resolved = connections.resolve().map_err(Failure::usage)?;
    if !yes && !database_is_local(&resolved.database_url).map_err(Failure::usage)? {
        return Err(Failure::usage(anyhow!(
            "the database is not on this machine; pass --yes to wipe namespace {:?} there",
            resolved.namespace.as_str()
        )));
    }
    let services = Services::connect(connections).await?;
    let broker = flashtix_server::saga::broker::connect(&services.connections.amqp_url)
        .await
        .with_context(|| {
            super::unreachable("RabbitMQ", &services.connections.amqp_url, "--amqp-url")
        })
        .map_err(Failure::unreachable)?;
    let events = sale::reset(
        &services.pool,
        &services.gate,
        &broker,
        &services.connections.namespace,
        &spec,
    )
    .await?;
    Ok((resolved.namespace, events))
}

pub fn print_seeded(namespace: &Namespace, events: &[Event]) {
    say!(
        "Reset namespace {:?}: seeded {} event(s).",
        namespace.as_str(),
        events.len()
    );
    say!("{}", output::events_table(events));
}
