//! The one place where failures become HTTP answers:
//! `{"error": {"code": "snake_case", "message": "human text"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::orders::request::RequestError;
use crate::orders::PlaceError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for `Retry-After`.
    pub retry_after: Option<u32>,
    /// The seats the answer is about (taken, unknown or blocked).
    pub seats: Vec<String>,
    /// The zone the answer is about (one with too few places left).
    pub zone: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            seats: Vec::new(),
            zone: None,
        }
    }

    fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn unavailable(error: &anyhow::Error) -> Self {
        // The cause is logged once here and never sent to the client.
        tracing::warn!(
            error = format!("{error:#}"),
            "request failed: dependency unavailable"
        );
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the sale is temporarily unavailable; retry shortly",
        )
        .retry_after(1)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if !self.seats.is_empty() {
            body["error"]["seats"] = json!(self.seats);
        }
        if let Some(zone) = self.zone {
            body["error"]["zone"] = json!(zone);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> Self {
        let message = error.to_string();
        match error {
            RequestError::MalformedJson(_) => {
                Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
            }
            RequestError::Invalid(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
            }
            RequestError::MissingIdempotencyKey => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "missing_idempotency_key",
                message,
            ),
        }
    }
}

impl From<PlaceError> for ApiError {
    fn from(error: PlaceError) -> Self {
        if let PlaceError::Unavailable(cause) = &error {
            return Self::unavailable(cause);
        }
        Self {
            status: error.status(),
            code: error.code(),
            message: error.to_string(),
            retry_after: error.retry_after(),
            seats: error.seats().to_vec(),
            zone: error.zone().map(str::to_owned),
        }
    }
}
