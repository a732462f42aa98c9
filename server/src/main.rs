//! `flashtix-server`: parse flags, run the sale, report how it ended.

use std::process::ExitCode;

use clap::Parser;
use flashtix_server::config::ServerArgs;

/// The flashtix sale server.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    flashtix_server::telemetry::init("info");
    let cli = Cli::parse();
    flashtix_server::startup::serve(&cli.server).await
}
