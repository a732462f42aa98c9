//! The storm, checked once: the flags laid over the scenario, the defaults
//! filled in, every value in range. Everything after reads this.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use super::args::StormArgs;
use super::engine::{self, Model, RawRequest, Shard, Tls, Work};
use super::outputs::Outputs;
use super::report::Threshold;
use super::tokens::{BuyerTokens, Numbers, MOST_AHEAD};
use super::workload::{Buyers, Quantities, Schedule};
use super::{seats, StormOptions};
use crate::commands::keys::Signer;
use crate::commands::{Failure, Services};

/// The storm, checked once: the flags laid over the scenario, the defaults
/// filled in, every value in range. Everything after reads this.
pub struct StormPlan {
    /// How the engine sends: the model, where, how many, how long, the
    /// shard and its start. `sending.target` is the sale's base URL, or the
    /// `--raw` URL.
    pub(super) sending: engine::Sending,
    /// The model as the tables name it.
    pub(super) model_label: String,
    /// The peak rate the schedule asks for, if it asks for one.
    pub(super) target_rate: Option<f64>,
    pub(super) settle: Duration,
    pub(super) thresholds: Vec<Threshold>,
    /// What each send does, before the events are known.
    pub(super) sends: Sends,
    /// Settle and check after the storm.
    pub(super) check: bool,
    /// For the requests around the storm (the seat maps).
    pub(super) client: reqwest::Client,
    /// Where the results go.
    pub(super) history: Option<PathBuf>,
    pub(super) outputs: Outputs,
}

pub(super) enum Sends {
    Raw(Arc<RawRequest>),
    Buy(Buying),
}

/// A buy storm's buyers, before their events are resolved.
pub(super) struct Buying {
    /// The events named; empty: every event of the sale.
    pub(super) events: Vec<i64>,
    pub(super) seed: u64,
    pub(super) quantities: Quantities,
    pub(super) duplicates: f64,
    pub(super) revisits: f64,
    pub(super) seat_retry: f64,
    pub(super) retries: u32,
    /// How the buyers sign in.
    pub(super) identities: Identities,
}

/// Where the buyers' tokens come from.
pub(super) enum Identities {
    /// A sale without tokens: the body's user_id names the buyer.
    Untokened,
    /// Signed by the storm, one buyer a purchase.
    Signed(Arc<Signer>),
    /// Read from a file.
    Listed(BuyerTokens),
}

impl StormPlan {
    /// Checks the storm `args` ask for, their settings laid over `file`'s.
    pub fn new(args: &StormArgs, file: StormOptions) -> anyhow::Result<Self> {
        let options = args.options.clone().over(file);
        let purchases = options.buyers;
        if purchases == Some(0) {
            bail!("--buyers must be at least 1");
        }
        let (model, model_label, target_rate) = model(&options)?;
        let shard = args.shard.unwrap_or(Shard::WHOLE);
        // A shard asks for its share of the whole storm's rate.
        let target_rate = target_rate.map(|rate| rate / shard.count as f64);
        if let Some(at) = args.start_at {
            if at < chrono::Utc::now() - chrono::TimeDelta::seconds(1) {
                bail!(
                    "--start-at {at} has passed: give a moment ahead, which every shard waits for"
                );
            }
        }
        if purchases.is_none() && options.duration.is_none() {
            bail!("say when the storm ends: --buyers N, --duration D, or both");
        }
        let timeout = options.timeout.unwrap_or(Duration::from_secs(10));
        if timeout.is_zero() {
            bail!("--timeout must be above 0");
        }
        let (target, sends) = sends(args, &options)?;
        let tls = Tls {
            roots: args
                .cacerts
                .iter()
                .map(|path| read_roots(path))
                .collect::<anyhow::Result<Vec<_>>>()?
                .concat(),
            insecure: args.insecure,
        };
        let client = tls
            .apply(reqwest::Client::builder())
            .build()
            .context("an HTTP client")?;
        Ok(Self {
            // A shard cannot check the sale alone: the other shards' orders
            // are not in its history.
            check: !args.no_check && matches!(sends, Sends::Buy(_)) && shard == Shard::WHOLE,
            sending: engine::Sending {
                model,
                target,
                purchases,
                duration: options.duration,
                timeout,
                lanes: args
                    .lanes
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
                shard,
                start_at: args.start_at,
                tls,
            },
            model_label,
            target_rate,
            settle: options.settle.unwrap_or(Duration::from_secs(60)),
            thresholds: options.thresholds,
            sends,
            client,
            history: args.history.clone(),
            outputs: args.outputs.clone(),
        })
    }

    pub(super) fn raw(&self) -> bool {
        matches!(self.sends, Sends::Raw(_))
    }

    /// Whether the storm needs the sale's database: to check it, or to list
    /// its events.
    pub(super) fn needs_services(&self) -> bool {
        self.check || matches!(&self.sends, Sends::Buy(buying) if buying.events.is_empty())
    }

    /// What the engine sends, the events resolved (and the seated ones among
    /// them, for the seat maps after the storm).
    pub(super) async fn work(
        &self,
        services: Option<&Services>,
    ) -> Result<(Work, Vec<i64>), Failure> {
        let buying = match &self.sends {
            Sends::Raw(request) => return Ok((Work::Raw(request.clone()), Vec::new())),
            Sends::Buy(buying) => buying,
        };
        let events = if buying.events.is_empty() {
            every_event(services.expect("connected to list the events")).await?
        } else {
            buying.events.clone()
        };
        let seated = seats::fetch(&self.client, &self.sending.target, &events)
            .await
            .map_err(Failure::unreachable)?;
        let seated_events = seated.keys().copied().collect();
        let mut buyers = Buyers {
            seed: buying.seed,
            events,
            quantities: buying.quantities.clone(),
            duplicates: buying.duplicates,
            revisits: buying.revisits,
            seated,
            seat_retry: buying.seat_retry,
            tokens: None,
        };
        let user = |number| buyers.user_id(number);
        let tokens = match &buying.identities {
            Identities::Untokened => None,
            Identities::Listed(tokens) => Some(tokens.clone()),
            Identities::Signed(signer) => {
                let shard = self.sending.shard;
                let numbers = Numbers {
                    first: shard.index,
                    step: shard.count,
                };
                let ahead = self
                    .planned()
                    .map_or(0, |planned| shard.share_of(planned.min(MOST_AHEAD)));
                let (tokens, minting) = BuyerTokens::mint(signer.clone(), numbers, ahead, &user);
                if minting.tokens > 0 {
                    // Not "storm: ...": a drill reads that as "sending".
                    eprintln!(
                        "tokens: {} buyers' tokens signed in {:.2} s, before the first send",
                        minting.tokens,
                        minting.took.as_secs_f64()
                    );
                }
                Some(tokens)
            }
        };
        buyers.tokens = tokens;
        let work = Work::Buy {
            buyers,
            retries: buying.retries,
        };
        Ok((work, seated_events))
    }

    /// How many purchases the whole storm sends, if the plan says: its
    /// number, or what its schedule sends in its duration.
    fn planned(&self) -> Option<u64> {
        let within = match (&self.sending.model, self.sending.duration) {
            (Model::Open { schedule, .. }, Some(duration)) => Some(schedule.sends_within(duration)),
            _ => None,
        };
        match (self.sending.purchases, within) {
            (Some(purchases), Some(within)) => Some(purchases.min(within)),
            (purchases, within) => purchases.or(within),
        }
    }
}

/// Where the storm sends, and what: a `--raw` request, or purchases.
fn sends(args: &StormArgs, options: &StormOptions) -> anyhow::Result<(String, Sends)> {
    let share = |flag: &str, share: Option<f64>, default: f64| {
        let share = share.unwrap_or(default);
        if (0.0..=1.0).contains(&share) {
            Ok(share)
        } else {
            Err(anyhow::anyhow!(
                "{flag} is a share from 0 to 1, got {share}"
            ))
        }
    };
    let buying = Buying {
        events: args.events.clone(),
        seed: options.seed.unwrap_or(1),
        quantities: options.quantity.clone().unwrap_or_else(Quantities::one),
        duplicates: share("--duplicates", options.duplicates, 0.0)?,
        revisits: share("--revisit", options.revisit, 0.0)?,
        seat_retry: share("--seat-retry", options.seat_retry, 0.5)?,
        retries: options.retries.unwrap_or(0),
        identities: match &args.tokens {
            Some(file) => Identities::Listed(BuyerTokens::read(file)?),
            None => args
                .signer
                .signer()?
                .map_or(Identities::Untokened, |signer| {
                    Identities::Signed(Arc::new(signer))
                }),
        },
    };
    if let Some(url) = &args.raw {
        if args.reset {
            bail!("--reset seeds a sale to buy from; --raw buys nothing");
        }
        return Ok((url.clone(), Sends::Raw(Arc::new(raw_request(args)?))));
    }
    let target = args.target.trim_end_matches('/').to_owned();
    Ok((target, Sends::Buy(buying)))
}

/// The CA certificates to trust in a PEM file (one or a bundle).
fn read_roots(path: &std::path::Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem =
        std::fs::read(path).with_context(|| format!("--cacert: reading {}", path.display()))?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem).unwrap_or_default();
    if roots.is_empty() {
        bail!(
            "--cacert {}: not a PEM certificate (no -----BEGIN CERTIFICATE----- in it)",
            path.display()
        );
    }
    Ok(roots)
}

/// The `--raw` request the flags describe: method, headers and body.
fn raw_request(args: &StormArgs) -> anyhow::Result<RawRequest> {
    let method = args
        .method
        .parse()
        .map_err(|_| anyhow::anyhow!("--method {:?} is not an HTTP method", args.method))?;
    let mut headers = reqwest::header::HeaderMap::new();
    for header in &args.headers {
        let bad = || anyhow::anyhow!("--header {header:?} is not 'Name: value'");
        let (name, value) = header.split_once(':').ok_or_else(bad)?;
        let name =
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
        let value = reqwest::header::HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
        headers.append(name, value);
    }
    let body = match args.body.as_deref() {
        Some(text) => match text.strip_prefix('@') {
            Some(path) => std::fs::read(path).with_context(|| format!("--body: reading {path}"))?,
            None => text.as_bytes().to_vec(),
        },
        None => Vec::new(),
    };
    Ok(RawRequest {
        method,
        headers,
        body: body.into(),
    })
}

/// The model the settings name (an open one at 1000/s if none), its label
/// and the peak rate it asks for.
fn model(options: &StormOptions) -> anyhow::Result<(Model, String, Option<f64>)> {
    if let Some(concurrency) = options.concurrency {
        if concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        let label = format!("closed (service time), {concurrency} in flight");
        return Ok((Model::Closed { concurrency }, label, None));
    }
    let schedule = if let Some(ramp) = options.ramp {
        ramp
    } else if let Some(within) = options.spike {
        let buyers = options
            .buyers
            .context("--spike needs --buyers: how many buyers in the window")?;
        Schedule::Spike { within, buyers }
    } else {
        let rate = options.rate.unwrap_or(1000.0);
        if !(rate > 0.0 && rate.is_finite()) {
            bail!("--rate must be above 0, got {rate}");
        }
        Schedule::Constant { rate }
    };
    let max_inflight = options.max_inflight.unwrap_or(1024);
    if max_inflight == 0 {
        bail!("--max-inflight must be at least 1");
    }
    let label = match schedule {
        Schedule::Constant { rate } => format!("open, {rate:.0}/s constant"),
        Schedule::Ramp { from, to, over } => {
            format!("open, ramp {from:.0}/s to {to:.0}/s over {over:?}")
        }
        Schedule::Spike { within, buyers } if within.is_zero() => {
            format!("open, spike of {buyers} all at once")
        }
        Schedule::Spike { within, buyers } => {
            format!("open, spike of {buyers} within {within:?}")
        }
    };
    let target = Some(schedule.peak_rate()).filter(|r| r.is_finite());
    let model = Model::Open {
        schedule,
        max_inflight,
    };
    Ok((model, label, target))
}

/// Every event of the sale, for a storm that names none.
pub(super) async fn every_event(services: &Services) -> Result<Vec<i64>, Failure> {
    let ids = flashtix_server::catalogue::events::ids(&services.pool)
        .await
        .context("listing the sale's events")?;
    if ids.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "the sale has no events: run `flashtix reset` first, or name one with --event"
        )));
    }
    Ok(ids)
}
