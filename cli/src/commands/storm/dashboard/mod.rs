//! `storm --dashboard [ADDR]`: a live web page of the storm while it runs.
//! One self-contained document (its script and styles inline; nothing is
//! fetched from elsewhere) fed by Server-Sent Events from the storm itself:
//! twice a second the lanes' counters (answers by outcome, in flight, sends
//! behind schedule, the latency from the intended send) and a drill's fault
//! windows; each event's stock and seats as the sale's own stock stream
//! tells them; at the end, the storm's document, the same figures as its
//! JSON and HTML report. The page outlives nothing: the process ends with
//! the storm unless `--dashboard-linger` keeps it.

mod frames;
mod live;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use flashtix_model::duration;
use tokio::task::JoinHandle;

use super::document::StormDocument;
use super::engine::Progress;
use crate::commands::stock_stream;
use frames::Frames;
use live::{Sampler, TICK};

/// The page, as written.
const PAGE: &str = include_str!("page.html");
/// How long a storm that is done waits for its final figures to reach the
/// pages following it.
const DELIVER_FINAL: Duration = Duration::from_secs(1);

#[derive(clap::Args, Clone, Debug, Default)]
pub struct DashboardArgs {
    /// Serve a live web page of the storm at ADDR while it runs (127.0.0.1:5665
    /// when no ADDR is given): answers a second by outcome, the latency from
    /// the intended send, sends in flight and behind schedule, each event's
    /// stock and seat map, a drill's faults
    #[arg(long, value_name = "ADDR", num_args = 0..=1,
          default_missing_value = "127.0.0.1:5665")]
    pub dashboard: Option<SocketAddr>,
    /// Keep serving the dashboard this long after the storm ends (without it
    /// the process ends with the storm)
    #[arg(long, value_parser = duration::parse, value_name = "DURATION",
          requires = "dashboard")]
    pub dashboard_linger: Option<Duration>,
}

/// What the dashboard follows besides the storm's counters.
pub struct Feeds {
    /// The sale's base URL, for its stock streams.
    pub target: String,
    /// The events bought from.
    pub events: Vec<i64>,
    /// A drill's fault windows, as its runner rewrites them.
    pub windows: Option<PathBuf>,
}

/// A running dashboard; dropping it stops it.
pub struct Dashboard {
    frames: Arc<Frames>,
    sampler: JoinHandle<Sampler>,
    /// Stops the sampler, which hands itself back for the last tick.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
    linger: Option<Duration>,
    address: SocketAddr,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.sampler.abort();
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Dashboard {
    /// Listens on `args`' address and starts telling pages about the storm
    /// whose counters are `progress`; `None` without `--dashboard`.
    pub async fn start(
        args: &DashboardArgs,
        progress: Arc<Progress>,
        feeds: Feeds,
    ) -> anyhow::Result<Option<Self>> {
        let Some(address) = args.dashboard else {
            return Ok(None);
        };
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("the dashboard cannot listen on {address}"))?;
        let address = listener.local_addr()?;
        let frames = Arc::new(Frames::default());
        let mut tasks = vec![tokio::spawn(serve(listener, frames.clone()))];
        let client = reqwest::Client::new();
        for event in feeds.events {
            let (frames, target) = (frames.clone(), feeds.target.clone());
            let told = move |message: stock_stream::Message| {
                let kind = serde_json::to_string(&message.kind).expect("a string serializes");
                let data = message.data;
                frames.push("stock", &format!("{{\"kind\":{kind},\"stock\":{data}}}"));
            };
            let follow = stock_stream::follow(
                client.clone(),
                event,
                move || Some(target.clone()),
                told,
                |_| {},
                TICK,
            );
            tasks.push(tokio::spawn(follow));
        }
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let sampler = tokio::spawn(sample(
            Sampler::new(progress, feeds.windows),
            frames.clone(),
            stopped,
        ));
        // Not "storm: ...": a drill reads that as "sending".
        eprintln!("dashboard: live at http://{address}/");
        Ok(Some(Self {
            frames,
            sampler,
            stop: Some(stop),
            tasks,
            linger: args.dashboard_linger,
            address,
        }))
    }

    /// Where the page is.
    pub fn url(&self) -> String {
        format!("http://{}/", self.address)
    }

    /// The storm's sends are over: the counters' last tick (so the page's
    /// totals are the storm's), and the page says it is settling.
    pub async fn sends_over(&mut self) {
        let Some(stop) = self.stop.take() else {
            return;
        };
        let _ = stop.send(());
        if let Ok(mut sampler) = (&mut self.sampler).await {
            let tick = sampler.tick();
            self.frames.push("tick", &to_json(&tick));
        }
        self.frames.push("over", "{}");
    }

    /// The storm is done: the page shows its document's figures. Then the
    /// page stays up for the linger asked for, if any.
    pub async fn finish(self, document: &StormDocument) {
        self.frames.push("final", &to_json(document));
        self.frames.delivered(DELIVER_FINAL).await;
        if let Some(linger) = self.linger {
            eprintln!("dashboard: stays at {} for {linger:?}", self.url());
            tokio::time::sleep(linger).await;
        }
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("the dashboard's messages serialize")
}

/// Tells the pages the counters every [`TICK`] until `stop`; then hands
/// the sampler back, for the last tick.
async fn sample(
    mut sampler: Sampler,
    frames: Arc<Frames>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Sampler {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut stop => return sampler,
            _ = tick.tick() => {
                let now = sampler.tick();
                frames.push("tick", &to_json(&now));
            }
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, frames: Arc<Frames>) {
    let router = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/events",
            get(move || async move { event_stream(frames.clone()) }),
        );
    let _ = axum::serve(listener, router).await;
}

fn event_stream(frames: Arc<Frames>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(frames.follow()),
    )
        .into_response()
}
