//! What an answer (or its absence) says about a request's outcome.

use flashtix_model::{ErrorCode, Outcome};
use hyper::StatusCode;

use super::http::Failure;

/// The outcome of an answer with this status and `error.code` (a code the
/// API does not have counts as none).
pub fn classify_status(status: StatusCode, code: Option<&str>) -> Outcome {
    match (status.as_u16(), code.and_then(ErrorCode::named)) {
        (200..=299, _) => Outcome::Accepted,
        (409, Some(ErrorCode::SoldOut | ErrorCode::ZoneSoldOut)) => Outcome::SoldOut,
        (409, Some(ErrorCode::SeatTaken)) => Outcome::SeatTaken,
        (409, Some(ErrorCode::LimitExceeded)) => Outcome::LimitExceeded,
        (409, Some(ErrorCode::RequestInProgress)) => Outcome::InProgress,
        (500..=599, _) => Outcome::Error,
        _ => Outcome::Rejected,
    }
}

pub fn classify_failure(failure: Failure) -> Outcome {
    match failure {
        Failure::Timeout => Outcome::Timeout,
        Failure::Connect => Outcome::ConnectError,
        // The request may have reached the server: its outcome is unknown.
        Failure::Broken => Outcome::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_by_status_and_code() {
        let conflict = StatusCode::CONFLICT;
        for (status, code, outcome) in [
            (StatusCode::ACCEPTED, None, Outcome::Accepted),
            (conflict, Some("sold_out"), Outcome::SoldOut),
            (conflict, Some("zone_sold_out"), Outcome::SoldOut),
            (conflict, Some("seat_taken"), Outcome::SeatTaken),
            (conflict, Some("limit_exceeded"), Outcome::LimitExceeded),
            (conflict, Some("request_in_progress"), Outcome::InProgress),
            (conflict, Some("idempotency_key_reused"), Outcome::Rejected),
            (conflict, Some("no_such_code"), Outcome::Rejected),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("unavailable"),
                Outcome::Error,
            ),
        ] {
            assert_eq!(classify_status(status, code), outcome, "{status} {code:?}");
        }
    }
}
