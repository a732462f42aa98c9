-- The sale's timeline, for `check` to tell how many tickets were spoken for
-- at any moment, and so whether a refusal was true when it was given.
--
-- A ticket is spoken for from the moment Redis admitted its hold (the hold's
-- id is a UUIDv7: its time is that moment, to the millisecond) until it is
-- for sale again. An order's tickets are for sale again once its stock
-- return reached Redis (`orders.returned_at`) and matured there. A hold that
-- never became an order (Postgres refused it, its batch failed, or the
-- reconciler found it lost) is recorded in `released_holds`, with whose it
-- was and how many tickets it held, when it was given back.
ALTER TABLE released_holds
    ADD COLUMN user_id         TEXT,
    ADD COLUMN idempotency_key TEXT,
    ADD COLUMN quantity        INTEGER;
ALTER TABLE orders ADD COLUMN returned_at TIMESTAMPTZ;

-- A standing place is back on sale when the order holding it ends unpaid,
-- but "when" must be after the event's row lock, which an order batch holds
-- while it counts a zone's live orders: the transaction's own start
-- (`updated_at`) may come before a batch that still saw the place taken.
-- The trigger that frees an unpaid order's seats now dates a standing
-- order's end too (`seats_back_at`: when its places were back on sale),
-- under the same lock.
CREATE OR REPLACE FUNCTION free_seats() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    back_at TIMESTAMPTZ;
BEGIN
    PERFORM 1 FROM events WHERE id = NEW.event_id FOR UPDATE;
    IF NEW.seats IS NULL THEN
        NEW.seats_back_at := clock_timestamp();
        RETURN NEW;
    END IF;
    back_at := clock_timestamp() + seat_return_delay();
    UPDATE seats SET order_id = NULL, free_from = back_at WHERE order_id = NEW.id;
    NEW.seats_back_at := back_at;
    RETURN NEW;
END
$$;

DROP TRIGGER orders_free_seats ON orders;
CREATE TRIGGER orders_free_seats BEFORE UPDATE OF status ON orders
    FOR EACH ROW
    WHEN ((NEW.seats IS NOT NULL OR NEW.zone IS NOT NULL)
          AND NEW.status IN ('CANCELLED', 'EXPIRED')
          AND OLD.status IN ('PENDING', 'CONFIRMED'))
    EXECUTE FUNCTION free_seats();
