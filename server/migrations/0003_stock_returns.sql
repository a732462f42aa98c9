-- Tickets given back in Postgres (an order expired or was cancelled) and not yet
-- given back to Redis. Written in the same transaction that releases the stock;
-- deleted once Redis has them. One per order, ever: the id is the order's.
CREATE TABLE stock_returns (
    order_id   UUID        PRIMARY KEY REFERENCES orders (id),
    event_id   BIGINT      NOT NULL,
    user_id    TEXT        NOT NULL,
    quantity   INTEGER     NOT NULL CHECK (quantity > 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX stock_returns_by_event ON stock_returns (event_id);
