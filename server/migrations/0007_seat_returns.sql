-- A seat freed by an order that ended unpaid is for sale again only
-- `seat_return_delay()` after it was freed. A process that saw a seat owned
-- may then answer "taken" from memory for less than that delay without ever
-- being wrong (see the writer's taken-seat board).
--
-- `seats.free_from`: when a freed seat is back on sale (NULL: never freed).
-- `orders.seats_back_at`: when the seats of an order that ended unpaid were
-- back on sale, for `check` to judge what buyers were told.
ALTER TABLE seats ADD COLUMN free_from TIMESTAMPTZ;
ALTER TABLE orders ADD COLUMN seats_back_at TIMESTAMPTZ;

CREATE FUNCTION seat_return_delay() RETURNS interval LANGUAGE sql STABLE
    AS $$ SELECT interval '5 seconds' $$;

-- Frees the seats of an order that ends unpaid, in the statement that ends
-- it, whichever path that is (expiry, a declined payment). It first takes the
-- event's row lock, which the order writer holds while it reads seats and
-- takes them: a writer that saw a seat owned has finished before the seat is
-- freed, and the return is dated by the clock at the freeing, after it.
DROP TRIGGER orders_free_seats ON orders;
DROP FUNCTION free_seats();

CREATE FUNCTION free_seats() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    back_at TIMESTAMPTZ;
BEGIN
    PERFORM 1 FROM events WHERE id = NEW.event_id FOR UPDATE;
    back_at := clock_timestamp() + seat_return_delay();
    UPDATE seats SET order_id = NULL, free_from = back_at WHERE order_id = NEW.id;
    NEW.seats_back_at := back_at;
    RETURN NEW;
END
$$;

CREATE TRIGGER orders_free_seats BEFORE UPDATE OF status ON orders
    FOR EACH ROW
    WHEN (NEW.seats IS NOT NULL AND NEW.status IN ('CANCELLED', 'EXPIRED')
          AND OLD.status IN ('PENDING', 'CONFIRMED'))
    EXECUTE FUNCTION free_seats();
