-- The payment saga's books. Written by the payment and order workers.

-- Our record of money moved for an order.
CREATE TABLE payments (
    id           UUID        PRIMARY KEY,
    order_id     UUID        NOT NULL REFERENCES orders (id),
    kind         TEXT        NOT NULL CHECK (kind IN ('CAPTURE', 'REFUND')),
    outcome      TEXT        NOT NULL CHECK (outcome IN ('SUCCEEDED', 'FAILED')),
    amount_cents BIGINT      NOT NULL CHECK (amount_cents >= 0),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- At most one successful capture and one successful refund per order.
CREATE UNIQUE INDEX payments_one_capture ON payments (order_id)
    WHERE kind = 'CAPTURE' AND outcome = 'SUCCEEDED';
CREATE UNIQUE INDEX payments_one_refund ON payments (order_id)
    WHERE kind = 'REFUND' AND outcome = 'SUCCEEDED';

-- The simulated provider's own ledger: its idempotency key is (order, kind), so a
-- repeated call returns the first result instead of moving money again. No foreign
-- key: the provider's books are not ours.
CREATE TABLE provider_ledger (
    order_id     UUID        NOT NULL,
    kind         TEXT        NOT NULL CHECK (kind IN ('CAPTURE', 'REFUND')),
    outcome      TEXT        NOT NULL CHECK (outcome IN ('SUCCEEDED', 'FAILED')),
    amount_cents BIGINT      NOT NULL CHECK (amount_cents >= 0),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, kind)
);

-- Consumers remember each message they applied, in the same transaction as its effects.
CREATE TABLE processed_messages (
    consumer     TEXT        NOT NULL,
    message_id   UUID        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
