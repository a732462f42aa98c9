//! `GET /openapi.json`: the API described as OpenAPI 3.0 (`server/openapi.json`),
//! for clients and for the tests that hold the routes to it.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document, as written.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

pub async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}
