//! `flashtix`: the operator's CLI. Parses flags, runs one command, exits with the
//! code the README gives: 0 all held, 1 an invariant failed, 2 usage or config,
//! 3 a storm's threshold missed, 4 services unreachable, 5 not everything could
//! be judged (UNKNOWN).

mod commands;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Subcommand};

/// Storms allocate small buffers by the thousand a second; mimalloc serves
/// them for less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run and prove flash sales.
#[derive(clap::Parser)]
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
    /// Merge the --json documents of several storms (one per shard) into one
    Merge(commands::storm::merge::MergeArgs),
    /// Make Postgres, Redis and RabbitMQ reachable (or stop what it started)
    Up(commands::up::UpArgs),
    /// A live terminal dashboard of a running sale
    Watch(commands::watch::WatchArgs),
    /// Failure drills: a storm, faults on a timeline, the invariants, a verdict
    Chaos(commands::chaos::ChaosArgs),
    /// A whole flash sale on this machine: serve, reset, storm, settle, check
    Demo(commands::demo::DemoArgs),
    /// Make the key pair tokens are signed with, or a new one beside it
    Keys(commands::keys::KeysArgs),
    /// Print a signed buyer or organizer token, for scripts and curl
    Token(commands::keys::TokenArgs),
    /// Run the sale server in this process
    Serve(Box<flashtix_server::runtime::config::ServerArgs>),
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell)
    Completions(commands::docs::CompletionsArgs),
    /// Print the manual page, or write one per command with --dir
    Man(commands::docs::ManArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    // `--json -` (on the innermost subcommand: `chaos run` has its own):
    // stdout is the JSON document's alone.
    let mut flags = &matches;
    while let Some((_, inner)) = flags.subcommand() {
        flags = inner;
    }
    let json = flags.try_get_one::<PathBuf>("json").ok().flatten();
    output::json_goes_to(json.map(PathBuf::as_path));
    let quiet = !matches!(cli.command, Command::Serve(_));
    flashtix_server::runtime::telemetry::init(if quiet { "warn" } else { "info" });
    let outcome = match cli.command {
        Command::Reset(args) => commands::reset::run(args).await,
        Command::Check(args) => commands::check::run(args).await,
        Command::Chaos(args) => commands::chaos::run(args).await,
        Command::Up(args) => commands::up::run(args).await,
        Command::Watch(args) => commands::watch::run(args).await,
        Command::Storm(args) => commands::storm::run(*args).await,
        Command::Merge(args) => commands::storm::merge::run(args),
        Command::Demo(mut args) => {
            let flags = matches.subcommand_matches("demo").expect("demo's flags");
            let said = matches!(
                flags.value_source("namespace"),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if !said {
                // Its own namespace: the demo must not wipe the operator's sale.
                args.connections.namespace = "demo".into();
            }
            commands::demo::run(args).await
        }
        Command::Keys(args) => commands::keys::run(args),
        Command::Token(args) => commands::keys::token(args),
        Command::Serve(args) => return flashtix_server::startup::serve(&args).await,
        Command::Completions(args) => commands::docs::completions(args, Cli::command()),
        Command::Man(args) => commands::docs::man(args, Cli::command()),
    };
    match outcome {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            failure.exit_code()
        }
    }
}
