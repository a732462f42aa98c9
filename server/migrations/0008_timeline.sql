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
