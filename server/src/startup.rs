//! Building and running a server process: connect, migrate, bind, serve.
//!
//! [`Application::build`] binds the listener before anything runs, so a caller
//! (a test, `flashtix serve`) can ask for port 0 and learn the real port.

use std::future::{Future, IntoFuture};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::catalogue::events::Catalogue;
use crate::gate::Gate;
use crate::http::{router, AppState};
use crate::identity::BuyerLimits;
use crate::notices::mail::Mailer;
use crate::notices::NotificationWorker;
use crate::orders::Desk;
use crate::runtime::config::{ServerArgs, Settings};
use crate::runtime::db::Purpose;
use crate::runtime::metrics::Metrics;
use crate::runtime::stop::Stop;
use crate::saga::broker::Topology;
use crate::saga::payments::provider::Provider;
use crate::saga::payments::PaymentWorker;
use crate::saga::settlement::OrderWorker;
use crate::stream::Streams;
use flashtix_model::Role;

/// Connections of the order writer: one per event selling at the same moment
/// is enough, since each event's batches run one after another (under its
/// row lock, even for the moment a lane that has left finishes its last).
const WRITER_POOL: u32 = 4;
/// Connections of the saga roles (relay, payments, orders): each holds one at
/// a time (a worker commits before it calls the provider).
const SAGA_POOL: u32 = 4;

/// How long a stopping process waits for its open answers: well past the
/// slowest an order can take on a struggling database (a pool's 5 s wait,
/// a reseed's 3 s, a replay's 2 s), since cutting one short could leave an
/// order committed and unanswered; but not for ever, since a client that
/// stopped reading a stream may never let its answer end.
const HTTP_DRAIN_LIMIT: Duration = Duration::from_secs(25);

/// How long a stopping process waits for its background loops to finish.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

pub struct Application {
    listener: TcpListener,
    state: AppState,
    settings: Settings,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let connections = &settings.connections;
        let pool = crate::runtime::db::pool(
            &connections.database_url,
            &connections.namespace,
            settings.db_pool,
            Purpose::General,
        )?;
        crate::runtime::db::migrate(&pool, &connections.namespace)
            .await
            .with_context(|| {
                format!(
                    "preparing the database at {} (is Postgres running? `flashtix up` \
                     starts it where it is missing)",
                    crate::runtime::config::address(&connections.database_url)
                )
            })?;
        crate::known_bad::weaken_schema(&pool)
            .await
            .context("weakening the schema of a known-bad server")?;
        let gate = Gate::connect(&connections.redis_url, connections.namespace.clone())
            .context("invalid Redis URL")?;
        let listener = TcpListener::bind(settings.bind).await.with_context(|| {
            format!(
                "listening on {} (--bind): is another server there, an earlier \
                     `flashtix serve`? Stop it, or choose another address",
                settings.bind
            )
        })?;
        let metrics = Arc::new(Metrics::default());
        let catalogue = Catalogue::new(pool.clone());
        let writer_pool = crate::runtime::db::pool(
            &connections.database_url,
            &connections.namespace,
            WRITER_POOL,
            Purpose::OrderWriter,
        )?;
        let desk = Desk::new(
            pool.clone(),
            writer_pool,
            gate.clone(),
            Arc::clone(&catalogue),
            Arc::clone(&metrics),
            settings.lane_idle,
        );
        let streams = Arc::new(Streams::new(
            pool.clone(),
            settings.stream,
            Arc::clone(&metrics),
        ));
        let state = AppState {
            streams,
            pool,
            gate,
            catalogue,
            desk,
            metrics,
            tokens: settings.identity.tokens.clone(),
            limits: settings
                .identity
                .buyer_rate
                .map(|rate| Arc::new(BuyerLimits::new(rate))),
            amqp_url: [
                Role::Relay,
                Role::Payments,
                Role::Orders,
                Role::Notifications,
            ]
            .into_iter()
            .any(|role| settings.runs(role))
            .then(|| connections.amqp_url.clone()),
            roles: settings.roles.clone(),
        };
        Ok(Self {
            listener,
            state,
            settings,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves; in-flight requests are finished first.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state;
        let (stop_request, stop) = crate::runtime::stop::channel();
        let serves_api = self.settings.runs(Role::Api);
        let mut background = start_background(&self.settings, &state, stop)?;
        // Small request/response pairs: send each at once rather than wait for more.
        let listener = self.listener.tap_io(|stream| {
            let _ = stream.set_nodelay(true);
        });
        // A stream never ends by itself: stopping ends them, so the graceful
        // shutdown's wait for open answers can end. A client that stopped
        // reading could still hold its answer open for good: the wait is
        // bounded.
        let streams = Arc::clone(&state.streams);
        let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown.await;
            streams.close();
            let _ = stopping.send(());
        };
        let serving = axum::serve(listener, router(state, serves_api))
            .with_graceful_shutdown(shutdown)
            .into_future();
        let served = tokio::select! {
            served = serving => served.context("serving HTTP"),
            () = async {
                if stopped.await.is_err() {
                    // Serving ended without a stop: the other branch has it.
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(HTTP_DRAIN_LIMIT).await;
            } => {
                tracing::warn!(
                    "connections still open {HTTP_DRAIN_LIMIT:?} after the stop; \
                     stopping without waiting for them"
                );
                Ok(())
            }
        };
        // HTTP is drained; now the background loops.
        stop_request.request();
        drain(&mut background).await;
        served
    }
}

/// Forgets, once a minute, the rate buckets of buyers who stopped asking.
async fn forget_idle_buyers(limits: Arc<BuyerLimits>, mut stop: Stop) {
    while stop.pause(Duration::from_secs(60)).await {
        limits.forget_idle();
    }
}

/// The API's own loops: the stock streams' producer, the reconciler, and
/// forgetting idle buyers' rate buckets.
fn api_loops(settings: &Settings, state: &AppState, stop: &Stop) -> Vec<JoinHandle<()>> {
    let mut loops = Vec::new();
    if settings.runs(Role::Api) {
        loops.push(tokio::spawn(Arc::clone(&state.streams).run(stop.clone())));
    }
    if let Some(limits) = &state.limits {
        loops.push(tokio::spawn(forget_idle_buyers(
            Arc::clone(limits),
            stop.clone(),
        )));
    }
    if let Some(every) = settings
        .reconcile_every
        .filter(|_| settings.runs(Role::Api))
    {
        loops.push(tokio::spawn(crate::gate::reconcile::run(
            state.pool.clone(),
            state.gate.clone(),
            Arc::clone(&state.metrics),
            every,
            stop.clone(),
        )));
    }
    loops
}

/// Starts the loops of every role this process runs besides the API: the
/// reconciler (with the API), the sweeper, the relay, the payment and order
/// workers. Each stops when `stop` is requested.
fn start_background(
    settings: &Settings,
    state: &AppState,
    stop: Stop,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut background = api_loops(settings, state, &stop);
    if settings.runs(Role::Sweeper) {
        background.push(tokio::spawn(crate::saga::expiry::run(
            state.pool.clone(),
            state.gate.clone(),
            Arc::clone(&state.metrics),
            settings.sweep_every,
            stop.clone(),
        )));
    }
    let connections = &settings.connections;
    let saga_pool = crate::runtime::db::pool(
        &connections.database_url,
        &connections.namespace,
        SAGA_POOL,
        Purpose::Saga,
    )?;
    if settings.runs(Role::Relay) {
        background.push(tokio::spawn(crate::saga::outbox::run(
            saga_pool.clone(),
            connections.amqp_url.clone(),
            Topology::new(connections.namespace.clone()),
            settings.relay_every,
            Arc::clone(&state.metrics),
            stop.clone(),
        )));
    }
    let topology = Topology::new(connections.namespace.clone());
    if settings.runs(Role::Payments) {
        let provider = Provider::new(saga_pool.clone(), settings.provider);
        background.push(tokio::spawn(crate::saga::consumer::run(
            Arc::new(PaymentWorker::new(
                saga_pool.clone(),
                provider,
                Arc::clone(&state.metrics),
            )),
            saga_pool.clone(),
            connections.amqp_url.clone(),
            topology.clone(),
            Arc::clone(&state.metrics),
            stop.clone(),
        )));
    }
    if settings.runs(Role::Orders) {
        let provider = Provider::new(saga_pool.clone(), settings.provider);
        background.push(tokio::spawn(crate::saga::consumer::run(
            Arc::new(OrderWorker::new(
                saga_pool.clone(),
                state.gate.clone(),
                provider,
                Arc::clone(&state.metrics),
            )),
            saga_pool.clone(),
            connections.amqp_url.clone(),
            topology.clone(),
            Arc::clone(&state.metrics),
            stop.clone(),
        )));
    }
    if settings.runs(Role::Notifications) {
        background.extend(notifications(settings, state, &saga_pool, topology, stop)?);
    }
    Ok(background)
}

/// The notifications role's loops: the worker that mails buyers and queues
/// webhooks, and the webhook dispatcher.
fn notifications(
    settings: &Settings,
    state: &AppState,
    saga_pool: &sqlx::PgPool,
    topology: Topology,
    stop: Stop,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let notices = &settings.notices;
    let mailer = match &notices.smtp {
        Some(server) => Some(Mailer::new(
            server,
            &notices.mail_from,
            &notices.buyer_mail_domain,
        )?),
        None => {
            tracing::warn!("no mail server (--smtp): buyers' notices are counted, not mailed");
            None
        }
    };
    let worker = NotificationWorker::new(saga_pool.clone(), mailer, Arc::clone(&state.metrics));
    Ok(vec![
        tokio::spawn(crate::saga::consumer::run(
            Arc::new(worker),
            saga_pool.clone(),
            settings.connections.amqp_url.clone(),
            topology,
            Arc::clone(&state.metrics),
            stop.clone(),
        )),
        tokio::spawn(crate::notices::webhooks::run(
            saga_pool.clone(),
            notices.clone(),
            Arc::clone(&state.metrics),
            stop,
        )),
    ])
}

/// Lets the background loops finish the unit of work they are in (a batch
/// of deliveries is handled and acknowledged, an outbox batch confirmed);
/// any still busy after [`DRAIN_LIMIT`] is cut off: its transaction rolls
/// back and its messages are redelivered.
async fn drain(background: &mut [JoinHandle<()>]) {
    let drained = async {
        for task in background.iter_mut() {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(DRAIN_LIMIT, drained).await.is_err() {
        tracing::warn!("background work still busy after {DRAIN_LIMIT:?}; cutting it off");
        for task in background.iter() {
            task.abort();
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM, saying the server is shutting down.
pub async fn shutdown_signal() {
    signalled().await;
    tracing::info!("shutting down: no new requests, finishing the ones in flight");
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn signalled() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Runs a server process from its flags: what `flashtix-server` and
/// `flashtix serve` both do. Exit codes as the CLI's: 2 config, 4 unreachable.
pub async fn serve(args: &ServerArgs) -> ExitCode {
    let settings = match args.resolve() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(error) => {
            eprintln!("error: cannot start: {error:#}");
            return ExitCode::from(4);
        }
    };
    // On stdout, alone: scripts (and `--bind 127.0.0.1:0`) learn the address here.
    println!(
        "flashtix listening on http://{}:{}",
        args.bind.ip(),
        app.port()
    );
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
