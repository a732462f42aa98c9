//! Every `error.code` the API answers with, in one list: the server writes
//! them, the storm classifies answers by them, the OpenAPI document lists
//! them. Which HTTP status each one goes with is the API's business and is
//! decided in the server's `http` module alone.

crate::named! {
    /// The `code` of an `{"error": {"code", "message"}}` answer.
    pub enum ErrorCode("an error code") {
        /// The event does not exist.
        EventNotFound = "event_not_found",
        /// No such thing (an order, a route).
        NotFound = "not_found",
        /// The body is not JSON.
        MalformedJson = "malformed_json",
        /// The body is JSON but not a valid request.
        InvalidRequest = "invalid_request",
        /// `POST /orders` without an `Idempotency-Key`.
        MissingIdempotencyKey = "missing_idempotency_key",
        /// The key was already used for a different request.
        IdempotencyKeyReused = "idempotency_key_reused",
        /// Another request with the key is still being worked on.
        RequestInProgress = "request_in_progress",
        /// Not enough tickets left for the order.
        SoldOut = "sold_out",
        /// The zone asked for has too few places left.
        ZoneSoldOut = "zone_sold_out",
        /// A seat asked for is already someone's.
        SeatTaken = "seat_taken",
        /// A seat asked for does not exist.
        UnknownSeat = "unknown_seat",
        /// A seat asked for is not for sale.
        SeatBlocked = "seat_blocked",
        /// The buyer already holds the most tickets the event allows.
        LimitExceeded = "limit_exceeded",
        /// A dependency is unreachable: retry shortly.
        Unavailable = "unavailable",
        /// A readiness probe: a dependency is unreachable.
        NotReady = "not_ready",
        /// No bearer token, or one that does not verify (expired, badly
        /// signed, for another audience, ...).
        Unauthorized = "unauthorized",
        /// A valid token that may not do this: a buyer on an organizer's
        /// route, or a body naming another buyer than the token's.
        Forbidden = "forbidden",
        /// One buyer asking faster than the sale's per-buyer rate.
        RateLimited = "rate_limited",
        MethodNotAllowed = "method_not_allowed",
        UnsupportedMediaType = "unsupported_media_type",
        PayloadTooLarge = "payload_too_large",
        /// Any other request the HTTP layer could not read.
        BadRequest = "bad_request",
    }
}

impl ErrorCode {
    /// A refusal of a purchase that says no order exists for the key: the
    /// stock, a seat or the limit said no.
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            Self::SoldOut | Self::ZoneSoldOut | Self::SeatTaken | Self::LimitExceeded
        )
    }
}
