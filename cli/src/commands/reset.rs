//! `flashtix reset`: wipe the namespace's sale and seed fresh events.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use flashtix_server::config::{database_is_local, ConnectionArgs};
use flashtix_server::events::{NewEvent, NewEventRequest};
use flashtix_server::sale::{self, SaleSpec};

use super::{Failure, Outcome, Services};
use crate::output;

#[derive(clap::Args)]
pub struct ResetArgs {
    #[command(flatten)]
    connections: ConnectionArgs,
    /// Events to seed
    #[arg(long, default_value_t = 1)]
    events: u32,
    /// Tickets per event
    #[arg(long, default_value_t = 1000)]
    tickets: i64,
    /// Price of one ticket, in cents
    #[arg(long, default_value_t = 5000)]
    price_cents: i64,
    /// Most tickets one buyer may hold per event
    #[arg(long, default_value_t = 4)]
    max_per_user: i64,
    /// How long an unpaid order holds its tickets
    #[arg(long, default_value_t = 300)]
    hold_seconds: i64,
    /// Name of the seeded events
    #[arg(long, default_value = "Flash sale")]
    name: String,
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

pub async fn run(args: ResetArgs) -> Outcome {
    if !(1..=1000).contains(&args.events) {
        return Err(Failure::usage(anyhow!(
            "--events must be between 1 and 1000"
        )));
    }
    let event = NewEvent::parse(NewEventRequest {
        name: args.name.clone(),
        total_tickets: args.tickets,
        price_cents: args.price_cents,
        max_per_user: Some(args.max_per_user),
        hold_seconds: Some(args.hold_seconds),
    })
    .map_err(|message| Failure::usage(anyhow!(message)))?;
    let connections = args.connections.resolve().map_err(Failure::usage)?;
    if !args.yes && !database_is_local(&connections.database_url).map_err(Failure::usage)? {
        return Err(Failure::usage(anyhow!(
            "the database is not on this machine; pass --yes to wipe namespace {:?} there",
            connections.namespace.as_str()
        )));
    }
    let services = Services::connect(&args.connections).await?;
    let broker = flashtix_server::broker::connect(&services.connections.amqp_url)
        .await
        .context("cannot reach RabbitMQ")
        .map_err(Failure::unreachable)?;
    let spec = SaleSpec {
        events: args.events,
        event,
    };
    let events = sale::reset(
        &services.pool,
        &services.gate,
        &broker,
        &services.connections.namespace,
        &spec,
    )
    .await?;
    if args.print_ids {
        for event in &events {
            println!("{}", event.id);
        }
    } else {
        println!(
            "Reset namespace {:?}: seeded {} event(s).",
            services.connections.namespace.as_str(),
            events.len()
        );
        println!("{}", output::events_table(&events));
    }
    if let Some(path) = &args.json {
        output::write_json(path, &events)?;
    }
    Ok(ExitCode::SUCCESS)
}
