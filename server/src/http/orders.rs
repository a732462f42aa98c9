//! `POST /orders`, `GET /orders/{id}` and `GET /me/orders`: a buyer buys
//! as their token's subject and reads only their own orders.

use flashtix_model::ErrorCode;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use uuid::Uuid;

use super::{auth, json_body, ApiError, AppState};
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
    let caller = auth::caller(&state, &headers)?;
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
    let buyer = caller.as_ref().map(|caller| &*caller.subject);
    let request = PlaceOrder::parse(key, &body, buyer)?;
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

/// An order, for its buyer only: anyone else is told there is no such
/// order, as if it did not exist.
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = auth::caller(&state, &headers)?;
    let not_found = || ApiError::not_found(format!("no order with id {id:?}"));
    let order_id: Uuid = id.parse().map_err(|_| not_found())?;
    let order = crate::orders::fetch(&state.pool, order_id)
        .await
        .map_err(|error| ApiError::unavailable(&error.into()))?
        .filter(|order| {
            caller
                .as_ref()
                .is_none_or(|caller| *caller.subject == order.user_id)
        })
        .ok_or_else(not_found)?;
    Ok(Json(order).into_response())
}

/// The most orders `GET /me/orders` lists (the newest), over every event.
const MY_ORDERS: i64 = 100;

/// The caller's own orders, newest first.
pub async fn mine(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(caller) = auth::caller(&state, &headers)? else {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "the sale runs without tokens (--no-tokens): nobody is known to be \"me\"",
        ));
    };
    let orders = crate::orders::listing::of_buyer(&state.pool, &caller.subject, MY_ORDERS)
        .await
        .map_err(|error| ApiError::unavailable(&error.into()))?;
    Ok(Json(serde_json::json!({ "user_id": &*caller.subject, "orders": orders })).into_response())
}
