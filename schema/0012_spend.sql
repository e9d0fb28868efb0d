-- Spend budgets: prices (in millionths of the currency) are counted into the same bucketed counters as sends,
-- under scopes 'spend:<tenant>' (a day, 1 h buckets) and 'spend:<tenant>:<country>' (an hour, 5 min buckets).
-- A day of a large tenant's spend in millionths outgrows integer.
ALTER TABLE pacing_counts ALTER COLUMN n TYPE bigint;

-- What each step's message cost, in millionths (the provider's reported price, else the configured one);
-- NULL when nothing prices it. STATS sums it into `cost`.
ALTER TABLE projections.message_view ADD COLUMN price_micros bigint;
