-- The live stock stream (`GET /events/{id}/stream`) names each state of an
-- event's stock by a version, so a client that reconnects (`Last-Event-ID`)
-- to any API process is told whether it missed anything.
--
-- Every change of the counters is made under the event's row lock, so the
-- versions follow commit order. The trigger also dates the change (by the
-- clock of the transaction that makes it, just before its commit; the
-- stream's lag is measured from it) and the moment the event sold out.
ALTER TABLE events
    ADD COLUMN stock_version    BIGINT      NOT NULL DEFAULT 0,
    ADD COLUMN stock_changed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN sold_out_at      TIMESTAMPTZ;

-- Events already sold out before this migration: sold out as of now.
UPDATE events SET sold_out_at = now() WHERE available_tickets = 0;

CREATE FUNCTION stock_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.stock_version := OLD.stock_version + 1;
    NEW.stock_changed_at := clock_timestamp();
    -- When it last sold out; kept when tickets come back (the stream says
    -- whether the event is sold out now).
    IF NEW.available_tickets = 0 AND OLD.available_tickets > 0 THEN
        NEW.sold_out_at := NEW.stock_changed_at;
    END IF;
    RETURN NEW;
END
$$;

-- Only updates that change a counter run it.
CREATE TRIGGER events_stock_changed
    BEFORE UPDATE OF available_tickets, pending_tickets, sold_tickets ON events
    FOR EACH ROW
    WHEN ((NEW.available_tickets, NEW.pending_tickets, NEW.sold_tickets)
          IS DISTINCT FROM (OLD.available_tickets, OLD.pending_tickets, OLD.sold_tickets))
    EXECUTE FUNCTION stock_changed();
