-- Seating plans: an event's zones, reserved (seats sold one by one) or general
-- admission (a count). An event without zones is sold by count alone.
CREATE TABLE zones (
    event_id    BIGINT    NOT NULL REFERENCES events (id),
    name        TEXT      NOT NULL,
    position    INTEGER   NOT NULL,
    kind        TEXT      NOT NULL CHECK (kind IN ('RESERVED', 'GENERAL')),
    price_cents BIGINT    NOT NULL CHECK (price_cents >= 0),
    -- Places for sale: standing (GENERAL) or seats not blocked (RESERVED).
    capacity    INTEGER   NOT NULL CHECK (capacity >= 0),
    -- RESERVED: each row's length, row 1 first.
    row_lengths INTEGER[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (event_id, name)
);

-- One row per reserved seat. `order_id` is its one owner: the order holding it
-- (PENDING) or that bought it (CONFIRMED); NULL when it is free. A seat cannot
-- have two.
CREATE TABLE seats (
    event_id    BIGINT  NOT NULL,
    seat_id     TEXT    NOT NULL,
    zone        TEXT    NOT NULL,
    row_number  INTEGER NOT NULL,
    seat_number INTEGER NOT NULL,
    blocked     BOOLEAN NOT NULL DEFAULT false,
    order_id    UUID,
    PRIMARY KEY (event_id, seat_id),
    FOREIGN KEY (event_id, zone) REFERENCES zones (event_id, name),
    CHECK (NOT (blocked AND order_id IS NOT NULL))
);

CREATE INDEX seats_by_order ON seats (order_id) WHERE order_id IS NOT NULL;
-- A zone's best free seats, front rows first, for orders that name a zone.
CREATE INDEX seats_free_by_place ON seats (event_id, zone, row_number, seat_number)
    WHERE order_id IS NULL AND NOT blocked;

-- What an order bought: its seats (reserved), or its general-admission zone.
ALTER TABLE orders ADD COLUMN seats TEXT[], ADD COLUMN zone TEXT;

-- A general-admission zone's live tickets are summed under the event's row lock.
CREATE INDEX orders_live_by_zone ON orders (event_id, zone)
    WHERE zone IS NOT NULL AND status IN ('PENDING', 'CONFIRMED');

-- An order that ends unpaid frees its seats in the same transaction, whichever
-- path ended it (expiry, a declined payment).
CREATE FUNCTION free_seats() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE seats SET order_id = NULL WHERE order_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER orders_free_seats AFTER UPDATE OF status ON orders
    FOR EACH ROW
    WHEN (NEW.seats IS NOT NULL AND NEW.status IN ('CANCELLED', 'EXPIRED')
          AND OLD.status IN ('PENDING', 'CONFIRMED'))
    EXECUTE FUNCTION free_seats();
