-- The dispatcher claims each channel's due rows in `available_at` order: an index by channel first lets each
-- lane's claim read only its own channel's rows. With the old index on `available_at` alone, a claim of 16 SMS
-- and nothing else scanned past every queued SMS for each empty lane (e-mail, voice, push): 200 ms a claim with
-- 117,000 rows queued, 70 messages a second.
DROP INDEX IF EXISTS outbox_available;
CREATE INDEX outbox_due ON outbox (channel, available_at);
