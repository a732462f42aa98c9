//! `POST /events` (admin), `GET /events/{id}` and `GET /events/{id}/seats`.

use flashtix_model::ErrorCode;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{json_body, ApiError, AppState};
use crate::catalogue::events::{NewEvent, NewEventRequest};
use crate::catalogue::seating;
use crate::orders::request::decode_json;

pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let body = json_body(&headers, body)?;
    let request: NewEventRequest = decode_json(&body)?;
    let event = NewEvent::parse(request)
        .map_err(|message| ApiError::new(ErrorCode::InvalidRequest, message))?;
    let created = crate::sale::open(&state.pool, &state.gate, &event)
        .await
        .map_err(|error| ApiError::unavailable(&error))?;
    let location = format!("/events/{}", created.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(created),
    )
        .into_response())
}

pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found(format!("no event with id {id:?}"));
    let event_id: i64 = id.parse().map_err(|_| not_found())?;
    let event = crate::catalogue::events::fetch(&state.pool, event_id)
        .await
        .map_err(|error| ApiError::unavailable(&error.into()))?
        .ok_or_else(not_found)?;
    Ok(Json(event).into_response())
}

/// The seat map: per zone its kind, price and counts, and for reserved
/// zones each seat's state, one string per row.
pub async fn seats(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found(format!("no event with id {id:?}"));
    let event_id: i64 = id.parse().map_err(|_| not_found())?;
    let unavailable = |error: sqlx::Error| ApiError::unavailable(&error.into());
    let event = crate::catalogue::events::fetch(&state.pool, event_id)
        .await
        .map_err(unavailable)?
        .ok_or_else(not_found)?;
    let Some(zones) = seating::seat_map(&state.pool, event_id)
        .await
        .map_err(unavailable)?
    else {
        return Err(ApiError::not_found(format!(
            "event {event_id} has no seating plan: it is sold by quantity"
        )));
    };
    Ok(Json(json!({
        "event_id": event.id,
        "legend": {
            flashtix_model::seating::FREE.to_string(): "available",
            flashtix_model::seating::HELD.to_string(): "held",
            flashtix_model::seating::SOLD.to_string(): "sold",
            flashtix_model::seating::RETURNING.to_string(): "returning (freed by an unpaid order, on sale again 5 s after)",
            flashtix_model::seating::BLOCKED.to_string(): "blocked",
        },
        "zones": zones,
    }))
    .into_response())
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let unauthorized = |message: &str| ApiError::new(ErrorCode::Unauthorized, message);
    let Some(token) = &state.admin_token else {
        return Err(unauthorized(
            "admin calls are disabled: start the server with FLASHTIX_ADMIN_TOKEN or --admin-token-file",
        ));
    };
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match offered {
        Some(offered) if token.matches(offered) => Ok(()),
        _ => Err(unauthorized("a valid admin bearer token is required")),
    }
}
