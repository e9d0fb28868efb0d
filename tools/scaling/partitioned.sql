-- Hash partitioning by stream: which of otpd's hot statements touch one partition, and which touch all.
--
-- Run against a database that has schema/*.sql loaded (it reads nothing from the project's tables and
-- changes none of them):
--     psql -v ON_ERROR_STOP=1 -f tools/scaling/partitioned.sql
-- Everything is created in the schema `scaling` inside one transaction that ends with ROLLBACK, so the run
-- leaves nothing behind. The statements are the ones otpd runs (Sources/EventStore, Sources/OTPService), with
-- literal values where otpd sends parameters. EXPLAIN (COSTS OFF) so the output does not depend on the
-- machine. docs/SCALING.md quotes the output.

\pset pager off
SET client_min_messages = notice;
BEGIN;
DROP SCHEMA IF EXISTS scaling CASCADE;
CREATE SCHEMA scaling;
SET LOCAL search_path = scaling, public;

-- ---------------------------------------------------------------------------------------------------
-- 1. What the partitioned tables cannot keep as they are in schema/*.sql
-- ---------------------------------------------------------------------------------------------------

\echo '== 1a. events.position GENERATED ALWAYS AS IDENTITY on a partitioned table'
-- PostgreSQL 15 accepts it on the parent and numbers rows inserted through the parent; a partition gets no
-- default of its own, so a row inserted into a partition directly has no position.
DO $$
BEGIN
    CREATE TABLE scaling.try_identity (
        stream_id text NOT NULL, version integer NOT NULL,
        position bigint GENERATED ALWAYS AS IDENTITY,
        PRIMARY KEY (stream_id, version)
    ) PARTITION BY HASH (stream_id);
    CREATE TABLE scaling.try_identity_0 PARTITION OF scaling.try_identity FOR VALUES WITH (MODULUS 1, REMAINDER 0);
    INSERT INTO scaling.try_identity (stream_id, version) VALUES ('acme/a', 1);
    RAISE NOTICE 'through the parent: accepted, position %', (SELECT position FROM scaling.try_identity);
    BEGIN
        INSERT INTO scaling.try_identity_0 (stream_id, version) VALUES ('acme/b', 1);
        RAISE NOTICE 'into the partition: accepted';
    EXCEPTION WHEN others THEN
        RAISE NOTICE 'into the partition: refused: % (SQLSTATE %)', SQLERRM, SQLSTATE;
    END;
END $$;

\echo '== 1b. messages: PRIMARY KEY (message_id) on a table partitioned by stream_id'
DO $$
BEGIN
    CREATE TABLE scaling.try_pk (
        message_id text PRIMARY KEY, stream_id text NOT NULL
    ) PARTITION BY HASH (stream_id);
    RAISE NOTICE 'accepted';
EXCEPTION WHEN others THEN
    RAISE NOTICE 'refused: % (SQLSTATE %)', SQLERRM, SQLSTATE;
END $$;

\echo '== 1c. messages: UNIQUE (tracking) on a table partitioned by stream_id'
DO $$
BEGIN
    CREATE TABLE scaling.try_unique (
        message_id text NOT NULL, stream_id text NOT NULL, tracking text NOT NULL UNIQUE,
        PRIMARY KEY (stream_id, message_id)
    ) PARTITION BY HASH (stream_id);
    RAISE NOTICE 'accepted';
EXCEPTION WHEN others THEN
    RAISE NOTICE 'refused: % (SQLSTATE %)', SQLERRM, SQLSTATE;
END $$;

-- ---------------------------------------------------------------------------------------------------
-- 2. The per-stream tables, hash-partitioned by stream_id into 8 partitions
-- ---------------------------------------------------------------------------------------------------

-- events: the primary key (stream_id, version) already contains the partition key; the identity column
-- stays (1a: otpd always inserts through the parent).
CREATE TABLE events (
    stream_id  text    NOT NULL,
    version    integer NOT NULL CHECK (version >= 1),
    type       text    NOT NULL,
    data       json    NOT NULL,
    at_ms      bigint  NOT NULL,
    prev_hash  bytea   NOT NULL,
    hash       bytea   NOT NULL,
    tx_id      xid8    NOT NULL DEFAULT pg_current_xact_id(),
    position   bigint  GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (stream_id, version)
) PARTITION BY HASH (stream_id);
CREATE INDEX events_log_order ON events (tx_id, position);

CREATE TABLE stream_heads (
    stream_id text PRIMARY KEY, version integer NOT NULL CHECK (version >= 1), mac bytea NOT NULL
) PARTITION BY HASH (stream_id);

CREATE TABLE session_keys (
    stream_id text PRIMARY KEY, sealed_key bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY HASH (stream_id);

CREATE TABLE timers (
    stream_id text NOT NULL, name text NOT NULL, due_ms bigint NOT NULL, token integer NOT NULL,
    leased_until_ms bigint,
    PRIMARY KEY (stream_id, name)
) PARTITION BY HASH (stream_id);
CREATE INDEX timers_due ON timers (due_ms);

CREATE TABLE outbox (
    stream_id text NOT NULL, token integer NOT NULL, step integer NOT NULL, channel text NOT NULL,
    attempts integer NOT NULL DEFAULT 0, available_at timestamptz NOT NULL DEFAULT now(),
    leased_until timestamptz, created_at timestamptz NOT NULL DEFAULT now(),
    lease_id bigint, in_flight boolean NOT NULL DEFAULT false,
    PRIMARY KEY (stream_id, token)
) PARTITION BY HASH (stream_id);
CREATE INDEX outbox_available ON outbox (available_at);

-- messages: the keys have to include stream_id (1b, 1c). message_id and tracking are keyed hashes made by
-- otpd, unique by construction; the database can now only check them per stream.
CREATE TABLE messages (
    message_id text NOT NULL, stream_id text NOT NULL, token integer NOT NULL, channel text NOT NULL,
    tracking text NOT NULL, provider_ref text, created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, message_id),
    UNIQUE (stream_id, tracking)
) PARTITION BY HASH (stream_id);
CREATE INDEX messages_id ON messages (message_id);
CREATE INDEX messages_tracking ON messages (tracking);
CREATE INDEX messages_provider_ref ON messages (channel, provider_ref) WHERE provider_ref IS NOT NULL;

CREATE TABLE session_view (LIKE projections.session_view INCLUDING ALL) PARTITION BY HASH (stream_id);

DO $$
DECLARE t text; i int;
BEGIN
    FOREACH t IN ARRAY ARRAY['events', 'stream_heads', 'session_keys', 'timers', 'outbox', 'messages', 'session_view']
    LOOP
        FOR i IN 0..7 LOOP
            EXECUTE format('CREATE TABLE scaling.%I PARTITION OF scaling.%I FOR VALUES WITH (MODULUS 8, REMAINDER %s)',
                           t || '_' || i, t, i);
        END LOOP;
    END LOOP;
END $$;

-- 20,000 sessions of 5 events, their heads, keys, timers, outbox rows and messages, so the planner sees real
-- tables; each transaction of the loop stands for many commands (tx_id differs per 1,000 sessions).
DO $$
BEGIN
    FOR b IN 0..19 LOOP
        INSERT INTO scaling.events (stream_id, version, type, data, at_ms, prev_hash, hash, tx_id)
        SELECT 'acme/s' || s, v, 'issued', '{}', 1700000000000 + s, '\x00', '\x00',
               (pg_current_xact_id()::text::bigint + b)::text::xid8
        FROM generate_series(b * 1000 + 1, b * 1000 + 1000) s, generate_series(1, 5) v;
    END LOOP;
END $$;
INSERT INTO stream_heads SELECT 'acme/s' || s, 5, '\x00' FROM generate_series(1, 20000) s;
INSERT INTO session_keys (stream_id, sealed_key) SELECT 'acme/s' || s, '\x00' FROM generate_series(1, 20000) s;
INSERT INTO timers SELECT 'acme/s' || s, 'expiry', 1700000000000 + s * 10, 1 FROM generate_series(1, 20000) s;
INSERT INTO outbox (stream_id, token, step, channel, available_at)
SELECT 'acme/s' || s, 1, 0, CASE WHEN s % 2 = 0 THEN 'sms' ELSE 'email' END, now() - interval '1 hour'
FROM generate_series(1, 20000) s;
INSERT INTO messages (message_id, stream_id, token, channel, tracking, provider_ref)
SELECT 'm_' || md5(s::text), 'acme/s' || s, 1, 'sms', md5('t' || s), 'SM' || s FROM generate_series(1, 20000) s;
ANALYZE events, stream_heads, session_keys, timers, outbox, messages;

\echo '== 2. where the rows went (20,000 streams over 8 partitions)'
SELECT tableoid::regclass AS partition, count(*) AS events FROM events GROUP BY 1 ORDER BY 1;

-- ---------------------------------------------------------------------------------------------------
-- 3. Hot statements that filter on the stream: one partition each
-- ---------------------------------------------------------------------------------------------------

\echo '== 3a. SessionStore.load: clock and session key'
EXPLAIN (COSTS OFF)
SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now,
       (SELECT sealed_key FROM session_keys WHERE stream_id = 'acme/s42') AS sealed_key;

\echo '== 3b. EventStore.readWithHead: the stream and its head'
EXPLAIN (COSTS OFF)
SELECT h.version AS head_version, h.mac AS head_mac,
       e.stream_id, e.version, e.type, e.data::text AS data, e.at_ms, e.prev_hash, e.hash
FROM (SELECT 1) AS one
LEFT JOIN stream_heads h ON h.stream_id = 'acme/s42'
LEFT JOIN events e ON e.stream_id = 'acme/s42'
ORDER BY e.version;

\echo '== 3c. EventStore.append: move the head and insert the events, one statement'
EXPLAIN (COSTS OFF)
WITH head AS (
    UPDATE stream_heads SET version = 6, mac = '\x01' WHERE stream_id = 'acme/s42' AND version = 5 RETURNING 1)
INSERT INTO events (stream_id, version, type, data, at_ms, prev_hash, hash)
SELECT * FROM (VALUES ('acme/s42'::text, 6::integer, 'sent'::text, '{}'::json, 1::bigint, '\x00'::bytea, '\x01'::bytea))
    AS new WHERE EXISTS (SELECT 1 FROM head);
-- EXPLAIN does not show tuple routing; run it and look where the row went.
WITH head AS (
    UPDATE stream_heads SET version = 6, mac = '\x01' WHERE stream_id = 'acme/s42' AND version = 5 RETURNING 1)
INSERT INTO events (stream_id, version, type, data, at_ms, prev_hash, hash)
SELECT * FROM (VALUES ('acme/s42'::text, 6::integer, 'sent'::text, '{}'::json, 1::bigint, '\x00'::bytea, '\x01'::bytea))
    AS new WHERE EXISTS (SELECT 1 FROM head);
SELECT tableoid::regclass AS partition, stream_id, version FROM events WHERE stream_id = 'acme/s42' AND version = 6;

\echo '== 3d. Timers.sync (upsert and delete), Outbox.enqueue/withdraw/beginSend/complete'
EXPLAIN (COSTS OFF)
INSERT INTO timers (stream_id, name, due_ms, token) VALUES ('acme/s42', 'step', 1, 6)
ON CONFLICT (stream_id, name) DO UPDATE SET due_ms = EXCLUDED.due_ms, token = EXCLUDED.token, leased_until_ms = NULL;
EXPLAIN (COSTS OFF) DELETE FROM timers WHERE stream_id = 'acme/s42' AND name = 'step';
EXPLAIN (COSTS OFF)
UPDATE outbox SET in_flight = true, leased_until = now() + make_interval(secs => 30)
WHERE stream_id = 'acme/s42' AND token = 1 AND lease_id = 7 AND leased_until > now();
EXPLAIN (COSTS OFF) DELETE FROM outbox WHERE stream_id = 'acme/s42' AND token = 1 AND lease_id = 7;

\echo '== 3e. The same lookup as a prepared statement with a generic plan (otpd prepares every statement)'
PREPARE load_key(text) AS SELECT sealed_key FROM session_keys WHERE stream_id = $1;
SET LOCAL plan_cache_mode = force_generic_plan;
EXPLAIN (COSTS OFF) EXECUTE load_key('acme/s42');
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE load_key('acme/s42');
RESET plan_cache_mode;

-- ---------------------------------------------------------------------------------------------------
-- 4. Hot statements that do not filter on the stream: every partition
-- ---------------------------------------------------------------------------------------------------

\echo '== 4a. EventStore.readLog (projector): the ordered log by (tx_id, position)'
EXPLAIN (COSTS OFF)
SELECT stream_id, version, type, data::text AS data, at_ms, prev_hash, hash, tx_id::text AS tx_text, position
FROM events
WHERE (tx_id, position) > ('0'::xid8, 0) AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY events.tx_id, events.position
LIMIT 2000;

\echo '== 4b. Timers.claimDue (scheduler): due rows of every stream, FOR UPDATE SKIP LOCKED'
EXPLAIN (COSTS OFF)
UPDATE timers SET leased_until_ms = 1700000100000
WHERE (stream_id, name) IN (
    SELECT stream_id, name FROM timers
    WHERE due_ms <= 1700000100000 AND (leased_until_ms IS NULL OR leased_until_ms < 1700000100000)
    ORDER BY due_ms LIMIT 64
    FOR UPDATE SKIP LOCKED)
RETURNING stream_id, name, token, due_ms;

\echo '== 4c. Timers.nextDue (scheduler, when idle)'
EXPLAIN (COSTS OFF) SELECT due_ms FROM timers WHERE due_ms > 1700000100000 ORDER BY due_ms LIMIT 1;

\echo '== 4d. Outbox.claim (dispatcher): due rows per channel lane, FOR UPDATE SKIP LOCKED'
EXPLAIN (COSTS OFF)
WITH lanes(channel, n) AS (VALUES ('email'::text, 16::integer), ('sms'::text, 16::integer))
UPDATE outbox o SET leased_until = now() + make_interval(secs => 30),
    attempts = o.attempts + 1, lease_id = nextval('outbox_lease_seq')
FROM (
    SELECT due.stream_id, due.token FROM lanes CROSS JOIN LATERAL (
        SELECT stream_id, token FROM outbox
        WHERE channel = lanes.channel AND available_at <= now()
          AND (leased_until IS NULL OR leased_until < now())
        ORDER BY available_at LIMIT lanes.n
        FOR UPDATE SKIP LOCKED) AS due
) AS picked
WHERE o.stream_id = picked.stream_id AND o.token = picked.token
RETURNING o.stream_id, o.token, o.channel, o.attempts, o.lease_id, o.in_flight;

\echo '== 4e. Messages.find (HTTP side, a receipt): by message id, by tracking token, by provider reference'
EXPLAIN (COSTS OFF)
SELECT message_id, stream_id, token, channel FROM messages WHERE message_id = 'm_' || md5('42');
EXPLAIN (COSTS OFF)
SELECT message_id, stream_id, token, channel FROM messages
WHERE channel = 'sms' AND provider_ref = 'SM42' ORDER BY created_at DESC LIMIT 1;

\echo '== 4f. ReadModels.load (projector): the batch''s sessions, passed as one JSON array'
EXPLAIN (COSTS OFF)
SELECT stream_id, version FROM session_view
WHERE stream_id IN (SELECT json_array_elements_text('["acme/s1","acme/s2"]'::json));
\echo '== 4g. the same with a constant array: pruned to the partitions the streams hash to'
EXPLAIN (COSTS OFF)
SELECT stream_id, version FROM session_view WHERE stream_id = ANY ('{acme/s1,acme/s2}'::text[]);

-- ---------------------------------------------------------------------------------------------------
-- 5. The buckets alternative (shared design): partition by bucket = f(stream), read and claim per bucket
-- ---------------------------------------------------------------------------------------------------
-- A bucket is a pure function of the stream id that otpd computes too (here: the first two bytes of
-- SHA-256 of the id, mod 64). Each append takes its bucket's counter row, so positions within a bucket are
-- gapless and in commit order; the projector keeps one checkpoint per bucket; the scheduler and the
-- dispatcher claim per bucket. Every one of those statements names its bucket, so it touches one partition.

CREATE FUNCTION stream_bucket(stream text) RETURNS smallint LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ((get_byte(sha256(convert_to(stream, 'UTF8')), 0) * 256
             + get_byte(sha256(convert_to(stream, 'UTF8')), 1)) % 64)::smallint
$$;

CREATE TABLE log_buckets (bucket smallint PRIMARY KEY, next_seq bigint NOT NULL DEFAULT 0)
    PARTITION BY HASH (bucket);
CREATE TABLE events_b (
    bucket smallint NOT NULL, seq bigint NOT NULL,
    stream_id text NOT NULL, version integer NOT NULL, type text NOT NULL, data json NOT NULL,
    PRIMARY KEY (bucket, stream_id, version)
) PARTITION BY HASH (bucket);
CREATE UNIQUE INDEX events_b_log ON events_b (bucket, seq);
CREATE TABLE timers_b (
    bucket smallint NOT NULL, stream_id text NOT NULL, name text NOT NULL, due_ms bigint NOT NULL,
    token integer NOT NULL, leased_until_ms bigint,
    PRIMARY KEY (bucket, stream_id, name)
) PARTITION BY HASH (bucket);
CREATE INDEX timers_b_due ON timers_b (bucket, due_ms);
CREATE TABLE checkpoints_b (
    subscriber text NOT NULL, bucket smallint NOT NULL, seq bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, subscriber)
) PARTITION BY HASH (bucket);
DO $$
DECLARE t text; i int;
BEGIN
    FOREACH t IN ARRAY ARRAY['log_buckets', 'events_b', 'timers_b', 'checkpoints_b'] LOOP
        FOR i IN 0..7 LOOP
            EXECUTE format('CREATE TABLE scaling.%I PARTITION OF scaling.%I FOR VALUES WITH (MODULUS 8, REMAINDER %s)',
                           t || '_' || i, t, i);
        END LOOP;
    END LOOP;
END $$;
INSERT INTO log_buckets (bucket) SELECT generate_series(0, 63);
INSERT INTO checkpoints_b (subscriber, bucket) SELECT 'projector', generate_series(0, 63);
INSERT INTO events_b
SELECT stream_bucket(stream_id),
       row_number() OVER (PARTITION BY stream_bucket(stream_id) ORDER BY tx_id, position),
       stream_id, version, type, data
FROM events;
UPDATE log_buckets l SET next_seq = m.n FROM (SELECT bucket, max(seq) AS n FROM events_b GROUP BY 1) m
WHERE l.bucket = m.bucket;
INSERT INTO timers_b SELECT stream_bucket(stream_id), stream_id, name, due_ms, token, leased_until_ms FROM timers;
ANALYZE log_buckets, events_b, timers_b, checkpoints_b;

\echo '== 5a. append: take the bucket''s next positions (the row lock orders the bucket''s appends)'
SELECT stream_bucket('acme/s42') AS bucket_of_acme_s42;
EXPLAIN (COSTS OFF)
UPDATE log_buckets SET next_seq = next_seq + 1 WHERE bucket = stream_bucket('acme/s42') RETURNING next_seq;

\echo '== 5b. projector: the next events of one bucket after its checkpoint'
EXPLAIN (COSTS OFF)
SELECT stream_id, version, type, seq FROM events_b
WHERE bucket = 17 AND seq > (SELECT seq FROM checkpoints_b WHERE bucket = 17 AND subscriber = 'projector')
ORDER BY seq LIMIT 2000;

\echo '== 5c. scheduler: due timers of one bucket, FOR UPDATE SKIP LOCKED'
EXPLAIN (COSTS OFF)
UPDATE timers_b SET leased_until_ms = 1700000100000
WHERE bucket = 17 AND (stream_id, name) IN (
    SELECT stream_id, name FROM timers_b
    WHERE bucket = 17 AND due_ms <= 1700000100000
      AND (leased_until_ms IS NULL OR leased_until_ms < 1700000100000)
    ORDER BY due_ms LIMIT 64
    FOR UPDATE SKIP LOCKED)
RETURNING stream_id, name, token, due_ms;

\echo '== 5d. a command''s read of its stream names the bucket too'
EXPLAIN (COSTS OFF)
SELECT version, type FROM events_b WHERE bucket = stream_bucket('acme/s42') AND stream_id = 'acme/s42'
ORDER BY version;

ROLLBACK;
