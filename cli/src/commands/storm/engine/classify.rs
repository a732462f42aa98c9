//! What an answer (or its absence) says about a request's outcome.

use flashtix_server::history::Outcome;
use hyper::StatusCode;

use super::http::Failure;

pub fn classify_status(status: StatusCode, code: Option<&str>) -> Outcome {
    match (status.as_u16(), code) {
        (200..=299, _) => Outcome::Accepted,
        (409, Some("sold_out" | "zone_sold_out")) => Outcome::SoldOut,
        (409, Some("seat_taken")) => Outcome::SeatTaken,
        (409, Some("limit_exceeded")) => Outcome::LimitExceeded,
        (409, Some("request_in_progress")) => Outcome::InProgress,
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
