-- One payment row per order and kind, whatever its outcome: the payment worker
-- records each order's capture once and tells a repeat by this key (the
-- provider answers an order once, so there is nothing else to record).
DROP INDEX payments_one_capture;
DROP INDEX payments_one_refund;
CREATE UNIQUE INDEX payments_once_per_order ON payments (order_id, kind);
