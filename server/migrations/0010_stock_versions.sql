-- The live stock stream (`GET /events/{id}/stream`) names each state of an
-- event's stock by a version, so a client that reconnects (`Last-Event-ID`)
-- to any API process is told whether it missed anything.
--
-- Every change of the counters is made under the event's row lock, so the
-- versions follow commit order. The trigger also dates the change (the
-- stream's lag is measured from it) and the moment the event sold out.
ALTER TABLE events
    ADD COLUMN stock_version    BIGINT      NOT NULL DEFAULT 0,
    ADD COLUMN stock_changed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN sold_out_at      TIMESTAMPTZ;

CREATE FUNCTION stock_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.available_tickets, NEW.pending_tickets, NEW.sold_tickets)
       IS DISTINCT FROM (OLD.available_tickets, OLD.pending_tickets, OLD.sold_tickets) THEN
        NEW.stock_version := OLD.stock_version + 1;
        NEW.stock_changed_at := clock_timestamp();
        IF NEW.available_tickets = 0 AND OLD.available_tickets > 0 THEN
            NEW.sold_out_at := NEW.stock_changed_at;
        ELSIF NEW.available_tickets > 0 THEN
            NEW.sold_out_at := NULL;
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER events_stock_changed BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION stock_changed();
