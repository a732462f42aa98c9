//! `GET /events/{id}/stream`: an event's stock as Server-Sent Events (see
//! [`crate::stream`]). Anyone may watch, as anyone may read the event.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;

use super::{ApiError, AppState};

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
    let subscription = state
        .streams
        .subscribe(event_id)
        .await
        .map_err(|error| ApiError::unavailable(&error))?
        .ok_or_else(not_found)?;
    let messages =
        crate::stream::messages(subscription, last_seen, Arc::clone(state.streams.metrics()));
    let mut response = Response::new(Body::from_stream(messages));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies that buffer answers (nginx) pass this one through as it comes.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
