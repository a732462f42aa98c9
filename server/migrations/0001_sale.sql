-- The sale: events with their stock, and the orders taken against them.
-- Every table lives in the namespace's own schema (the connection's search_path).

CREATE TABLE events (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              TEXT        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    total_tickets     INTEGER     NOT NULL CHECK (total_tickets > 0),
    -- The stock. The CHECK is the last line against oversell: whatever Redis says,
    -- a transaction that would take it below zero fails.
    available_tickets INTEGER     NOT NULL CHECK (available_tickets >= 0),
    -- Tickets of PENDING and CONFIRMED orders, kept in the same transactions that
    -- change the orders, so reading an event's stock is one row.
    pending_tickets   INTEGER     NOT NULL DEFAULT 0 CHECK (pending_tickets >= 0),
    sold_tickets      INTEGER     NOT NULL DEFAULT 0 CHECK (sold_tickets >= 0),
    price_cents       BIGINT      NOT NULL CHECK (price_cents >= 0),
    max_per_user      INTEGER     NOT NULL CHECK (max_per_user >= 1),
    hold_seconds      INTEGER     NOT NULL CHECK (hold_seconds >= 1),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- No ticket is ever made or lost: every change moves tickets between columns.
    CHECK (available_tickets + pending_tickets + sold_tickets = total_tickets)
);

CREATE TABLE orders (
    id              UUID        PRIMARY KEY,
    event_id        BIGINT      NOT NULL REFERENCES events (id),
    user_id         TEXT        NOT NULL,
    -- The order row is the idempotency record: the key is unique per user, and the
    -- fingerprint of the request body tells a replay from a reuse.
    idempotency_key TEXT        NOT NULL,
    fingerprint     TEXT        NOT NULL,
    quantity        INTEGER     NOT NULL CHECK (quantity > 0),
    amount_cents    BIGINT      NOT NULL CHECK (amount_cents >= 0),
    status          TEXT        NOT NULL DEFAULT 'PENDING'
                    CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED', 'EXPIRED')),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at      TIMESTAMPTZ NOT NULL,
    CONSTRAINT orders_one_per_idempotency_key UNIQUE (user_id, idempotency_key)
);

-- Per-user holdings are summed under the event's row lock.
CREATE INDEX orders_by_event_user ON orders (event_id, user_id);
-- The expiry sweeper looks only at pending orders.
CREATE INDEX orders_pending_by_expiry ON orders (expires_at) WHERE status = 'PENDING';

-- Transactional outbox: written in the same transaction as the change it announces.
CREATE TABLE outbox (
    id           BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id   UUID        NOT NULL UNIQUE,
    topic        TEXT        NOT NULL,
    payload      JSONB       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);

CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
