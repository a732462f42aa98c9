//! `POST /orders` and `GET /orders/{id}`.

use flashtix_model::ErrorCode;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use uuid::Uuid;

use super::{json_body, ApiError, AppState};
use crate::orders::request::PlaceOrder;
use crate::orders::{Placed, Receipt};

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

#[tracing::instrument(name = "place_order", skip_all, fields(order_id))]
pub async fn place(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body)?;
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        // Any printable text (UTF-8), not only ASCII: `to_str` would refuse "clé".
        Some(value) => Some(std::str::from_utf8(value.as_bytes()).map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "Idempotency-Key must be UTF-8 text",
            )
        })?),
    };
    let request = PlaceOrder::parse(key, &body)?;
    let placed = state.desk.place(request).await?;
    let (receipt, replayed) = match placed {
        Placed::Accepted(receipt) => (receipt, false),
        Placed::Replayed(receipt) => (receipt, true),
    };
    tracing::Span::current().record("order_id", tracing::field::display(receipt.order_id));
    Ok(accepted(receipt, replayed))
}

fn accepted(receipt: Receipt, replayed: bool) -> Response {
    let location = format!("/orders/{}", receipt.order_id);
    let mut response = (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(receipt),
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found(format!("no order with id {id:?}"));
    let order_id: Uuid = id.parse().map_err(|_| not_found())?;
    let order = crate::orders::fetch(&state.pool, order_id)
        .await
        .map_err(|error| ApiError::unavailable(&error.into()))?
        .ok_or_else(not_found)?;
    Ok(Json(order).into_response())
}
