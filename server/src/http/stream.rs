//! `GET /events/{id}/stream`: an event's stock as Server-Sent Events (see
//! [`crate::stream`]). Anyone may watch, as anyone may read the event.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;

use super::{ApiError, AppState};
use crate::stream::{Frame, Subscription};

/// The header a reconnecting client names the last message it saw with.
const LAST_EVENT_ID: &str = "last-event-id";

pub async fn stock(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found(format!("no event with id {id:?}"));
    let event_id: i64 = id.parse().map_err(|_| not_found())?;
    // An id that is not a version of ours is as good as none: the client
    // is sent the stock as it stands.
    let last_seen = headers
        .get(LAST_EVENT_ID)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<i64>().ok());
    let joined = match joined(&state, event_id, last_seen).await {
        Ok(Some(joined)) => joined,
        Ok(None) => return Err(not_found()),
        // A browser's EventSource gives up for good on any answer but 200:
        // this one tells it to come back, to this process or another.
        // Logged quietly: every watcher asks again every few seconds while
        // it lasts.
        Err(error) => {
            tracing::debug!(
                error = format!("{error:#}"),
                "a stock stream could not start"
            );
            return Ok(event_stream(Body::from(Bytes::from(format!(
                "{}: unavailable: the stock cannot be told now; reconnect\n\n",
                String::from_utf8_lossy(&Frame::retry())
            )))));
        }
    };
    let (subscription, last_seen) = joined;
    let messages =
        crate::stream::messages(subscription, last_seen, Arc::clone(state.streams.metrics()));
    Ok(event_stream(Body::from_stream(messages)))
}

/// The event's stream joined, and the client's last version if it is one
/// the sale has reached (a later one, from a client's mistake or another
/// event, would keep it waiting for a version that may never come).
async fn joined(
    state: &AppState,
    event_id: i64,
    last_seen: Option<i64>,
) -> anyhow::Result<Option<(Subscription, Option<i64>)>> {
    let Some(subscription) = state.streams.subscribe(event_id).await? else {
        return Ok(None);
    };
    let told = &subscription.told;
    let last_seen = match last_seen {
        // A seated stream starts with the map whatever the client saw.
        _ if told.zones.is_some() => None,
        // Ahead of this process: the database says whether it is real (if
        // it cannot, the client gets the stock as it stands).
        Some(seen) if seen > told.stock.version => {
            let reached = state.streams.version(event_id).await.ok().flatten();
            last_seen.filter(|_| reached.is_some_and(|version| version >= seen))
        }
        other => other,
    };
    Ok(Some((subscription, last_seen)))
}

/// An answer of Server-Sent Events with `body`.
fn event_stream(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies that buffer answers (nginx) pass this one through as it comes.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
