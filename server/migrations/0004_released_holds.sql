-- Reservations the reconciler gave up on: a Redis hold whose order it did not
-- find in Postgres, released in Redis after this row committed. The order
-- writer refuses to commit an order under one of these ids, so a batch that
-- was only slow (waiting for the event's row lock, a stalled Postgres) cannot
-- commit an order whose hold, key and tickets Redis has already given back.
CREATE TABLE released_holds (
    order_id    UUID        PRIMARY KEY,
    event_id    BIGINT      NOT NULL,
    released_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
