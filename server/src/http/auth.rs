//! Who a request is from: its bearer token verified, the buyer's rate
//! applied. A refusal says why in the usual JSON error and, as RFC 6750
//! asks, in `WWW-Authenticate`; it changes nothing.

use axum::http::{header, HeaderMap};
use flashtix_model::ErrorCode;

use super::{ApiError, AppState};
use crate::identity::{Access, Caller, TokenError};

const REALM: &str = "flashtix";

/// The caller of a request; `None` when the sale runs without tokens.
pub fn caller(state: &AppState, headers: &HeaderMap) -> Result<Option<Caller>, ApiError> {
    let Some(verifier) = &state.tokens else {
        return Ok(None);
    };
    let caller = bearer(headers)
        .and_then(|token| verifier.verify(token))
        .map_err(unauthorized)?;
    if let Some(limits) = &state.limits {
        if let Err(wait) = limits.admit(&caller.subject) {
            state.metrics.buyer_rate_limited();
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u32;
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!("too many requests from this buyer; retry in {seconds} s"),
            )
            .retry_after(seconds));
        }
    }
    Ok(Some(caller))
}

/// The caller, who must hold an organizer token.
pub fn organizer(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    match caller(state, headers)? {
        Some(caller) if caller.access == Access::Organizer => Ok(caller),
        Some(_) => Err(ApiError::new(
            ErrorCode::Forbidden,
            "this needs an organizer's token; a buyer's may not",
        )
        .challenge(format!(
            r#"Bearer realm="{REALM}", error="insufficient_scope""#
        ))),
        None => Err(ApiError::new(
            ErrorCode::Forbidden,
            "the sale runs without tokens (--no-tokens): organizer calls are off",
        )),
    }
}

/// The token of `Authorization: Bearer TOKEN`.
fn bearer(headers: &HeaderMap) -> Result<&str, TokenError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(TokenError::Missing);
    };
    let value = value
        .to_str()
        .map_err(|_| TokenError::Malformed("the Authorization header is not text".into()))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
        _ => Err(TokenError::Malformed(
            "use the Bearer scheme: Authorization: Bearer TOKEN".into(),
        )),
    }
}

/// `401`, with a challenge naming what is wrong (none for a missing token).
fn unauthorized(error: TokenError) -> ApiError {
    let challenge = match &error {
        TokenError::Missing => format!(r#"Bearer realm="{REALM}""#),
        other => {
            let description = other.to_string().replace(['"', '\\'], "'");
            format!(
                r#"Bearer realm="{REALM}", error="invalid_token", error_description="{description}""#
            )
        }
    };
    ApiError::new(ErrorCode::Unauthorized, error.to_string()).challenge(challenge)
}
