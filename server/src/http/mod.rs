//! The HTTP API (the README's API table): routes, shared state, and the checks every body
//! goes through before a handler sees it.

mod auth;
mod error;
mod events;
mod health;
mod openapi;
mod orders;
mod stream;

use flashtix_model::ErrorCode;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use sqlx::PgPool;

pub use error::ApiError;

use crate::catalogue::events::Catalogue;
use crate::gate::Gate;
use crate::identity::{BuyerLimits, Verifier};
use crate::orders::Desk;
use crate::runtime::metrics::Metrics;
use crate::stream::Streams;

/// The largest body accepted; an order is well under 1 KiB.
const BODY_LIMIT: usize = 64 * 1024;

/// What every request may need. The router shares one behind an `Arc`, so a
/// request costs a reference count, not a copy of every field.
pub struct AppState {
    pub pool: PgPool,
    pub gate: Gate,
    pub catalogue: Arc<Catalogue>,
    pub desk: Desk,
    pub metrics: Arc<Metrics>,
    /// Verifies buyer and organizer tokens; `None`: `--no-tokens`.
    pub tokens: Option<Arc<Verifier>>,
    /// The live stock streams of this process.
    pub streams: Arc<Streams>,
    /// The buyers' request rate; `None`: no limit.
    pub limits: Option<Arc<BuyerLimits>>,
    /// RabbitMQ, when a role of this process needs it (`/ready` checks it then).
    pub amqp_url: Option<String>,
    /// The roles this process runs (`/health` names them).
    pub roles: Vec<flashtix_model::Role>,
}

/// The routes of a process: the sale's API if it runs the `api` role; health,
/// readiness, metrics and the API's description always, so every role can be
/// watched.
pub fn router(state: AppState, serves_api: bool) -> Router {
    let state = Arc::new(state);
    let sale = Router::new()
        .route("/events", post(events::create))
        .route("/events/{id}", get(events::show))
        .route("/events/{id}/seats", get(events::seats))
        .route("/events/{id}/stream", get(stream::stock))
        .route("/events/{id}/orders", get(events::attendees))
        .route("/events/{id}/summary", get(events::summary))
        .route("/orders", post(orders::place))
        .route("/orders/{id}", get(orders::show))
        .route("/me/orders", get(orders::mine));
    let base = if serves_api { sale } else { Router::new() };
    base.route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::document))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), timed))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Times every routed request into the per-route latency histogram.
async fn timed(
    State(state): State<Arc<AppState>>,
    route: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state.metrics.http_request(
        route.as_str(),
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// A JSON body: the right content type, within the size limit.
fn json_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {BODY_LIMIT} bytes"),
        ),
        status => ApiError::with_status(status, ErrorCode::BadRequest, rejection.body_text()),
    })
}
