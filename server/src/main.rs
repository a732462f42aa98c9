//! `flashtix-server`: parse flags, run the sale, report how it ended.

use std::process::ExitCode;

use clap::Parser;
use flashtix_server::runtime::config::ServerArgs;

/// Storms allocate small buffers by the thousand a second; mimalloc serves
/// them for less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The flashtix sale server.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    flashtix_server::runtime::telemetry::init("info");
    let cli = Cli::parse();
    flashtix_server::startup::serve(&cli.server).await
}
