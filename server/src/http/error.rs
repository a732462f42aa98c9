//! The one place where failures become HTTP answers:
//! `{"error": {"code": "snake_case", "message": "human text"}}`, and where
//! each error code gets its HTTP status ([`status_of`]).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flashtix_model::ErrorCode;
use serde_json::json;

use crate::orders::request::RequestError;
use crate::orders::PlaceError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Seconds, for `Retry-After`.
    pub retry_after: Option<u32>,
    /// The seats the answer is about (taken, unknown or blocked).
    pub seats: Vec<String>,
    /// The zone the answer is about (one with too few places left).
    pub zone: Option<String>,
    /// `WWW-Authenticate`, for a refused token.
    pub challenge: Option<String>,
}

/// The HTTP status each error code is answered with.
pub fn status_of(code: ErrorCode) -> StatusCode {
    use ErrorCode::*;
    match code {
        EventNotFound | NotFound => StatusCode::NOT_FOUND,
        MalformedJson | BadRequest => StatusCode::BAD_REQUEST,
        InvalidRequest | MissingIdempotencyKey | UnknownSeat | SeatBlocked => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        IdempotencyKeyReused | RequestInProgress | SoldOut | ZoneSoldOut | SeatTaken
        | LimitExceeded => StatusCode::CONFLICT,
        Unavailable | NotReady => StatusCode::SERVICE_UNAVAILABLE,
        Unauthorized => StatusCode::UNAUTHORIZED,
        Forbidden => StatusCode::FORBIDDEN,
        RateLimited => StatusCode::TOO_MANY_REQUESTS,
        MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
    }
}

impl ApiError {
    /// An answer with `code`'s status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::with_status(status_of(code), code, message)
    }

    /// An answer whose status is not `code`'s own: a rejection of the HTTP
    /// layer that carries its own status.
    pub fn with_status(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            seats: Vec::new(),
            zone: None,
            challenge: None,
        }
    }

    /// With `WWW-Authenticate: challenge`.
    pub fn challenge(mut self, challenge: String) -> Self {
        self.challenge = Some(challenge);
        self
    }

    pub(super) fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, what)
    }

    pub fn unavailable(error: &anyhow::Error) -> Self {
        // The cause is logged once here and never sent to the client.
        tracing::warn!(
            error = format!("{error:#}"),
            "request failed: dependency unavailable"
        );
        Self::new(
            ErrorCode::Unavailable,
            "the sale is temporarily unavailable; retry shortly",
        )
        .retry_after(1)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code.name(), "message": self.message}});
        if !self.seats.is_empty() {
            body["error"]["seats"] = json!(self.seats);
        }
        if let Some(zone) = self.zone {
            body["error"]["zone"] = json!(zone);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
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
        let code = match error {
            RequestError::MalformedJson(_) => ErrorCode::MalformedJson,
            RequestError::Invalid(_) => ErrorCode::InvalidRequest,
            RequestError::MissingIdempotencyKey => ErrorCode::MissingIdempotencyKey,
            RequestError::AnotherBuyer => ErrorCode::Forbidden,
        };
        Self::new(code, error.to_string())
    }
}

impl From<PlaceError> for ApiError {
    fn from(error: PlaceError) -> Self {
        if let PlaceError::Unavailable(cause) = &error {
            return Self::unavailable(cause);
        }
        let code = error.code();
        Self {
            status: status_of(code),
            code,
            message: error.to_string(),
            retry_after: error.retry_after(),
            seats: error.seats().to_vec(),
            zone: error.zone().map(str::to_owned),
            challenge: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each answer the OpenAPI document lists names its codes as
    /// "(`error.code`: `a`, `b`)"; every one must be a code, answered with
    /// that status.
    #[test]
    fn the_documented_codes_are_codes_answered_with_the_documented_status() {
        let document: serde_json::Value =
            serde_json::from_str(super::super::openapi::DOCUMENT).unwrap();
        let mut named = 0;
        for operation in document["paths"].as_object().unwrap().values() {
            for method in operation.as_object().unwrap().values() {
                let Some(responses) = method["responses"].as_object() else {
                    continue;
                };
                for (status, response) in responses {
                    let description = response["description"].as_str().unwrap_or_default();
                    let Some((_, codes)) = description.split_once("`error.code`: ") else {
                        continue;
                    };
                    let codes = codes.split(')').next().unwrap();
                    for code in codes.split(", ") {
                        let name = code.trim_matches('`');
                        let code = ErrorCode::named(name)
                            .unwrap_or_else(|| panic!("{name:?} is not an error code"));
                        assert_eq!(status_of(code).as_str(), status, "{name}");
                        named += 1;
                    }
                }
            }
        }
        assert!(
            named >= 15,
            "only {named} codes found: the pattern no longer matches"
        );
    }
}
