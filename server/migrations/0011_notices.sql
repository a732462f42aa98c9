-- Notices: how each order ended, told to its buyer by mail and to its
-- event's organizer by webhook.

-- Where an event's organizer is told of each order's end (none: nowhere).
ALTER TABLE events ADD COLUMN webhook_url TEXT
    CHECK (webhook_url IS NULL OR length(webhook_url) BETWEEN 8 AND 2000);

-- A buyer's mail, sent: a message handled again skips what is here. A crash
-- between sending and this row means one resend, under the same Message-ID.
CREATE TABLE notices (
    order_id  UUID        NOT NULL REFERENCES orders (id),
    ending    TEXT        NOT NULL
              CHECK (ending IN ('CONFIRMED', 'CANCELLED', 'EXPIRED', 'REFUNDED')),
    mailed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, ending)
);

-- The organizer's webhook deliveries: each is tried until its receiver
-- answers 2xx, with a pause that doubles, and dead-lettered after the last
-- try. The id is the notice's, so a receiver can tell a resend.
CREATE TABLE webhook_deliveries (
    id              TEXT        PRIMARY KEY,
    order_id        UUID        NOT NULL REFERENCES orders (id),
    url             TEXT        NOT NULL,
    body            TEXT        NOT NULL,
    attempts        INTEGER     NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at    TIMESTAMPTZ,
    dead_at         TIMESTAMPTZ,
    last_error      TEXT
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
