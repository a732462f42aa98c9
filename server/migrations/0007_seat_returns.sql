-- A seat freed by an order that ended unpaid is for sale again only
-- `seat_return_delay()` after the order ended. A process that saw a seat owned
-- may then answer "taken" from memory for less than that delay without ever
-- being wrong: the seat cannot be sold to anyone before its answer expires
-- (see the writer's taken-seat board). `free_from` is when a freed seat comes
-- back; NULL for a seat never freed.
ALTER TABLE seats ADD COLUMN free_from TIMESTAMPTZ;

CREATE FUNCTION seat_return_delay() RETURNS interval LANGUAGE sql IMMUTABLE
    AS $$ SELECT interval '5 seconds' $$;

-- Dated from the start of the transaction that ends the order, the moment its
-- `updated_at` records: `check` reads when each seat was back on sale from
-- the order alone.
CREATE OR REPLACE FUNCTION free_seats() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE seats SET order_id = NULL, free_from = now() + seat_return_delay()
    WHERE order_id = NEW.id;
    RETURN NULL;
END
$$;
