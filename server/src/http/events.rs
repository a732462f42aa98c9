//! `POST /events`, `GET /events/{id}/orders` and `GET /events/{id}/summary`
//! (an organizer's), `GET /events/{id}` and `GET /events/{id}/seats`
//! (anyone's).

use flashtix_model::ErrorCode;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{auth, json_body, ApiError, AppState};
use crate::catalogue::events::{NewEvent, NewEventRequest};
use crate::catalogue::seating;
use crate::orders::listing;
use crate::orders::request::decode_json;

pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let organizer = auth::organizer(&state, &headers)?;
    let body = json_body(&headers, body)?;
    let request: NewEventRequest = decode_json(&body)?;
    let mut event = NewEvent::parse(request)
        .map_err(|message| ApiError::new(ErrorCode::InvalidRequest, message))?;
    event.organizer = Some(organizer.subject.to_string());
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

/// The event of `id` if the caller, an organizer, may read its orders;
/// an event of another organizer's is not found, as if it did not exist.
async fn organizers_event(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<i64, ApiError> {
    let organizer = auth::organizer(state, headers)?;
    let not_found = || ApiError::not_found(format!("no event with id {id:?}"));
    let event_id: i64 = id.parse().map_err(|_| not_found())?;
    let allowed = listing::organizer_may_read(&state.pool, event_id, &organizer.subject)
        .await
        .map_err(|error| ApiError::unavailable(&error.into()))?;
    match allowed {
        Some(true) => Ok(event_id),
        _ => Err(not_found()),
    }
}

/// An event's orders, a page at a time (`?after=ORDER_ID&limit=N`), as JSON
/// or, with `?format=csv` or `Accept: text/csv`, as CSV; the next page is
/// named in `Link`.
pub async fn attendees(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let event_id = organizers_event(&state, &headers, &id).await?;
    let page = Page::parse(query.as_deref().unwrap_or_default(), &headers)?;
    let orders = listing::of_event(&state.pool, event_id, page.after, page.limit)
        .await
        .map_err(|error| ApiError::unavailable(&error.into()))?;
    let next = (orders.len() as i64 == page.limit)
        .then(|| orders.last().map(|order| order.order_id))
        .flatten();
    let mut response = if page.csv {
        (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            attendees_csv(&orders),
        )
            .into_response()
    } else {
        Json(json!({ "event_id": event_id, "orders": orders, "next": next })).into_response()
    };
    if let Some(next) = next {
        let format = if page.csv { "&format=csv" } else { "" };
        let link = format!(
            "</events/{event_id}/orders?after={next}&limit={}{format}>; rel=\"next\"",
            page.limit
        );
        if let Ok(link) = axum::http::HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, link);
        }
    }
    Ok(response)
}

/// An event's sales in figures: stock, orders by status, revenue, refunds.
pub async fn summary(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let event_id = organizers_event(&state, &headers, &id).await?;
    let summary = listing::summary(&state.pool, event_id)
        .await
        .map_err(|error| ApiError::unavailable(&error.into()))?
        .ok_or_else(|| ApiError::not_found(format!("no event with id {id:?}")))?;
    Ok(Json(summary).into_response())
}

/// A page of an event's orders, as asked for.
struct Page {
    after: Option<uuid::Uuid>,
    limit: i64,
    csv: bool,
}

impl Page {
    const DEFAULT_LIMIT: i64 = 100;

    fn parse(query: &str, headers: &HeaderMap) -> Result<Self, ApiError> {
        let invalid = |message: String| ApiError::new(ErrorCode::InvalidRequest, message);
        let mut page = Self {
            after: None,
            limit: Self::DEFAULT_LIMIT,
            csv: headers
                .get(header::ACCEPT)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|accept| accept.contains("text/csv")),
        };
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "after" => {
                    page.after = Some(value.parse().map_err(|_| {
                        invalid(format!("after must be an order id, got {value:?}"))
                    })?)
                }
                "limit" => {
                    page.limit = value
                        .parse()
                        .ok()
                        .filter(|limit| (1..=listing::MAX_PAGE).contains(limit))
                        .ok_or_else(|| {
                            invalid(format!(
                                "limit must be 1 to {}, got {value:?}",
                                listing::MAX_PAGE
                            ))
                        })?
                }
                "format" if value == "csv" => page.csv = true,
                "format" if value == "json" => page.csv = false,
                _ => {
                    return Err(invalid(format!(
                    "unknown parameter {pair:?}: this takes after, limit and format (json or csv)"
                )))
                }
            }
        }
        Ok(page)
    }
}

/// The orders as CSV, one line each, with a header line.
fn attendees_csv(orders: &[crate::orders::Order]) -> String {
    let mut csv =
        String::from("order_id,user_id,status,quantity,amount_cents,seats,zone,created_at\n");
    for order in orders {
        let seats = order.seats.as_deref().unwrap_or_default().join(" ");
        let line = [
            order.order_id.to_string(),
            csv_field(&order.user_id),
            order.status.to_string(),
            order.quantity.to_string(),
            order.amount_cents.to_string(),
            csv_field(&seats),
            csv_field(order.zone.as_deref().unwrap_or_default()),
            order.created_at.to_rfc3339(),
        ];
        csv.push_str(&line.join(","));
        csv.push('\n');
    }
    csv
}

/// A CSV field: quoted when it holds a comma, a quote or a line break, and
/// never starting with what a spreadsheet would run as a formula.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("alice"), "alice");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
    }
}
