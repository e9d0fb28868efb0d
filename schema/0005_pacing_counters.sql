-- Country and tenant ceilings count into time buckets instead of scanning `sends`: a check reads at most
-- (window / bucket + 1) x shards rows, however many sends the window holds. Each bucket is split into a few
-- shards (by session) so concurrent sends of one tenant or country do not queue on one row lock.
CREATE TABLE pacing_counts (
    scope     text     NOT NULL,   -- 'country:+44', 'tenant:acme'
    bucket_ms bigint   NOT NULL,   -- the bucket's start, Unix epoch milliseconds
    shard     smallint NOT NULL,
    n         integer  NOT NULL,
    PRIMARY KEY (scope, bucket_ms, shard)
);

-- Carry the sends already recorded into the buckets (10 s for countries, 1 h for tenants).
INSERT INTO pacing_counts (scope, bucket_ms, shard, n)
SELECT 'country:' || country, at_ms - at_ms % 10000, 0, count(*) FROM sends WHERE country IS NOT NULL GROUP BY 1, 2;
INSERT INTO pacing_counts (scope, bucket_ms, shard, n)
SELECT 'tenant:' || tenant, at_ms - at_ms % 3600000, 0, count(*) FROM sends GROUP BY 1, 2;

-- `sends` now serves the per-destination limits only.
ALTER TABLE sends DROP COLUMN country, DROP COLUMN tenant;
-- The janitor deletes rows older than the longest window by time.
CREATE INDEX sends_age ON sends (at_ms);
CREATE INDEX session_starts_age ON session_starts (at_ms);
