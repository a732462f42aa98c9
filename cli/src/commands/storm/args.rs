//! `flashtix storm`'s flags.

use std::path::PathBuf;

use flashtix_server::runtime::config::ConnectionArgs;

use super::dashboard::DashboardArgs;
use super::engine::Shard;
use super::outputs::Outputs;
use super::StormOptions;
use crate::commands::keys::SignerArgs;
use flashtix_server::identity::config::TokenScope;

#[derive(clap::Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub(super) connections: ConnectionArgs,
    /// Read the storm (and the sale --reset seeds) from this TOML file; flags
    /// given here win over it
    #[arg(long, value_name = "FILE")]
    pub(super) scenario: Option<PathBuf>,
    /// Reset the sale first: the scenario's sale table, or reset's defaults
    #[arg(long)]
    pub(super) reset: bool,
    /// The sale server's base URL
    #[arg(long, env = "FLASHTIX_TARGET", default_value = "http://127.0.0.1:8080")]
    pub(super) target: String,
    #[command(flatten)]
    pub(super) options: StormOptions,
    /// An event to buy from (repeatable); without it, every event of the sale
    #[arg(long = "event")]
    pub(super) events: Vec<i64>,
    /// Buy from every event of the sale (what happens without --event)
    #[arg(long = "events", value_name = "all", value_parser = ["all"], conflicts_with = "events")]
    pub(super) every_event: Option<String>,
    // Each buyer's token signed with a key (or a secret), one buyer a
    // purchase, before the first send.
    #[command(flatten)]
    pub(super) signer: SignerArgs,
    /// Or each purchase's buyer is a token of this file (one a line, used in
    /// turn): the buyer is its subject (a key to sign with is then unused)
    #[arg(long, value_name = "FILE")]
    pub(super) tokens: Option<PathBuf>,

    /// Calibration: plain requests to this URL with the same engine; no buying, no check
    #[arg(long, value_name = "URL")]
    pub(super) raw: Option<String>,
    /// The method of --raw requests
    #[arg(long, default_value = "GET")]
    pub(super) method: String,
    /// A header of every --raw request, like 'Authorization: Bearer x'
    /// (repeatable)
    #[arg(long = "header", value_name = "NAME: VALUE", requires = "raw")]
    pub(super) headers: Vec<String>,
    /// The body of every --raw request: the text itself, or @FILE for a
    /// file's bytes
    #[arg(long, value_name = "TEXT|@FILE", requires = "raw")]
    pub(super) body: Option<String>,
    /// Trust this CA (PEM; repeatable) for an https:// --target or --raw,
    /// besides Mozilla's roots
    #[arg(long = "cacert", value_name = "FILE.pem")]
    pub(super) cacerts: Vec<PathBuf>,
    /// Accept any certificate of an https:// target (a test server's own):
    /// no check of who answers
    #[arg(long)]
    pub(super) insecure: bool,

    /// Write one JSON line per attempt (the history `check --history` reads)
    #[arg(long)]
    pub(super) history: Option<PathBuf>,
    #[command(flatten)]
    pub(super) outputs: Outputs,
    #[command(flatten)]
    pub(super) dashboard: DashboardArgs,
    /// Skip the settle wait and the invariants
    #[arg(long)]
    pub(super) no_check: bool,
    /// Tasks sending in parallel (default: one per core)
    #[arg(long, hide = true)]
    pub(super) lanes: Option<usize>,
    /// Send only shard I of N of the storm: the purchases whose number is I
    /// modulo N, at the times the whole storm would (run N shards, on as many
    /// machines, with one --seed and one --start-at)
    #[arg(long, value_name = "I/N", value_parser = Shard::parse, requires = "start_at")]
    pub(super) shard: Option<Shard>,
    /// Begin the schedule at this moment (RFC 3339, like
    /// 2026-12-01T18:00:00Z), so that shards on several machines begin
    /// together
    #[arg(long, value_name = "TIME")]
    pub(super) start_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl StormArgs {
    /// These flags, the buyers' tokens signed with the private key of
    /// `signing_key` for the default audience and issuer (whatever the
    /// environment says: the sale it buys from was started with them).
    pub fn signed_by(mut self, signing_key: PathBuf) -> Self {
        self.signer.signing_key = Some(signing_key);
        self.signer.token_secret_file = None;
        self.signer.scope = TokenScope::default();
        self.tokens = None;
        self
    }
}
