//! `flashtix`: the operator's CLI. Parses flags, runs one command, exits with the
//! code DESIGN §6 gives: 0 all held, 1 an invariant failed, 2 usage or config,
//! 3 a storm's threshold missed, 4 services unreachable.

mod commands;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run and prove flash sales.
#[derive(Parser)]
#[command(name = "flashtix", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Wipe the namespace's sale and seed fresh events
    Reset(commands::reset::ResetArgs),
    /// Prove from the database that every invariant held
    Check(commands::check::CheckArgs),
    /// Fire a buy storm, measure it, wait for the sale to settle, and check it
    Storm(Box<commands::storm::StormArgs>),
    /// Run the sale server in this process
    Serve(flashtix_server::config::ServerArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = !matches!(cli.command, Command::Serve(_));
    flashtix_server::telemetry::init(if quiet { "warn" } else { "info" });
    let outcome = match cli.command {
        Command::Reset(args) => commands::reset::run(args).await,
        Command::Check(args) => commands::check::run(args).await,
        Command::Storm(args) => commands::storm::run(*args).await,
        Command::Serve(args) => return flashtix_server::startup::serve(&args).await,
    };
    match outcome {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            failure.exit_code()
        }
    }
}
