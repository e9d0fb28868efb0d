-- Fencing for the outbox: each claim takes a new lease id, and every later write to the row names it, so an
-- instance whose lease ran out can no longer release, retry or delete a row another instance holds.
-- `in_flight` is set just before the provider is called and cleared only by a recorded outcome: a row claimed
-- while it is set was handed to the provider by a holder that never recorded what happened (it died, or its
-- database calls failed), so the message may have gone out and is not sent again.
CREATE SEQUENCE outbox_lease_seq;
ALTER TABLE outbox ADD COLUMN lease_id bigint, ADD COLUMN in_flight boolean NOT NULL DEFAULT false;
