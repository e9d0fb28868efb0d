-- Spend budgets: prices (in millionths of the currency) are counted into the same bucketed counters as sends,
-- under scopes 'spend_day:<tenant>' (a day, 1 h buckets) and 'spend_hour:<tenant>:<country>' (an hour, 5 min
-- buckets).
-- A day of a large tenant's spend in millionths outgrows integer.
ALTER TABLE pacing_counts ALTER COLUMN n TYPE bigint;

-- What each step's message cost, in millionths (the provider's reported price, else the configured one);
-- NULL when nothing prices it. STATS sums it into `cost`.
ALTER TABLE projections.message_view ADD COLUMN price_micros bigint;

-- Each message's price for SQL, in the currency's units (NULL when nothing priced it).
CREATE OR REPLACE VIEW analytics.messages AS
SELECT tenant, split_part(stream_id, '/', 2) AS session, step, channel, country, policy,
       NULLIF(variant, 0) AS variant, provider, first_step,
       to_timestamp(issued_ms / 1000.0) AS issued_at,
       to_timestamp(started_ms / 1000.0) AS started_at,
       to_timestamp(sent_ms / 1000.0) AS sent_at,
       to_timestamp(delivered_ms / 1000.0) AS delivered_at,
       to_timestamp(opened_ms / 1000.0) AS opened_at,
       CASE WHEN delivered_ms IS NOT NULL AND sent_ms IS NOT NULL THEN GREATEST(delivered_ms - sent_ms, 0) END
           AS delivery_ms,
       failed, escalated, verified_ms IS NOT NULL AS verified, expired,
       price_micros / 1000000.0 AS price
FROM projections.message_view
WHERE NOT withdrawn OR sent_ms IS NOT NULL;

-- Provider failover: whether a try of the current provider may have reached it (a timeout after the request
-- went out). Such a step is retried with that provider (its idempotency key) but never handed to another.
ALTER TABLE outbox ADD COLUMN maybe_sent boolean NOT NULL DEFAULT false;
