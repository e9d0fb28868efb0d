-- The projector's read models, in a schema of their own; the stable views analysts query are in `analytics`.
-- Written only by the projector (OTPService.Projector), each batch of events in one transaction with its
-- checkpoint, so every event is applied exactly once. No code and no personal data: ids, channels, a phone
-- number's country calling code, times (database clock, epoch ms) and counts.
CREATE SCHEMA projections;

-- One row per session.
CREATE TABLE projections.session_view (
    stream_id          text    PRIMARY KEY,
    tenant             text    NOT NULL,
    session            text    NOT NULL,
    policy             text    NOT NULL,
    variant            integer NOT NULL,           -- 1-based; 0 when the policy has no variants
    country            text    NOT NULL,           -- '+44'; 'none' without a phone number
    status             text    NOT NULL,           -- as STATUS names it
    version            integer NOT NULL,           -- the last event applied
    current_token      integer NOT NULL,           -- the version that started the current step
    channels           text[]  NOT NULL,           -- the channels gone through, in order
    converted_step     integer,
    converted_channel  text,
    issued_ms          bigint  NOT NULL,
    first_sent_ms      bigint,
    first_delivered_ms bigint,
    verified_ms        bigint,
    ended_ms           bigint,
    last_event_ms      bigint  NOT NULL,           -- when the last applied event was appended
    applied_ms         bigint  NOT NULL            -- when the projector applied it (lag = applied - last_event)
);
CREATE INDEX session_view_tenant_issued ON projections.session_view (tenant, issued_ms);

-- One row per step started (its message); STATS counts these.
CREATE TABLE projections.message_view (
    stream_id    text    NOT NULL,
    token        integer NOT NULL,                 -- the version that started the step
    tenant       text    NOT NULL,
    step         integer NOT NULL,
    channel      text    NOT NULL,
    country      text    NOT NULL,
    policy       text    NOT NULL,
    variant      integer NOT NULL,
    provider     text,
    first_step   boolean NOT NULL,                 -- the session's first message: it counts the session as issued
    issued_ms    bigint  NOT NULL,                 -- the session's
    started_ms   bigint  NOT NULL,
    sent_ms      bigint,
    delivered_ms bigint,                           -- first delivered or opened receipt
    opened_ms    bigint,
    failed       boolean NOT NULL,
    escalated    boolean NOT NULL,                 -- the session left this step for another
    verified_ms  bigint,                           -- set on the step current when the code was verified
    expired      boolean NOT NULL,
    withdrawn    boolean NOT NULL,                 -- a late receipt withdrew this start
    PRIMARY KEY (stream_id, token)
);
CREATE INDEX message_view_tenant_issued ON projections.message_view (tenant, issued_ms);

-- Counters per hour (of issue) x tenant x channel x country x policy(variant).
CREATE TABLE projections.delivery_stats (
    hour      timestamptz NOT NULL,
    tenant    text    NOT NULL,
    channel   text    NOT NULL,
    country   text    NOT NULL,
    policy    text    NOT NULL,
    variant   integer NOT NULL,
    issued    bigint  NOT NULL DEFAULT 0,
    sent      bigint  NOT NULL DEFAULT 0,
    delivered bigint  NOT NULL DEFAULT 0,
    failed    bigint  NOT NULL DEFAULT 0,
    opened    bigint  NOT NULL DEFAULT 0,
    escalated bigint  NOT NULL DEFAULT 0,
    verified  bigint  NOT NULL DEFAULT 0,
    expired   bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, tenant, channel, country, policy, variant)
);

-- Latency histograms of the same groups: fixed log-scale buckets (each bound 2^(1/4) above the one before, so
-- a percentile read from them is within 19 %), the same everywhere, so they add up across hours and groups.
CREATE TABLE projections.delivery_latency (
    hour    timestamptz NOT NULL,
    tenant  text    NOT NULL,
    channel text    NOT NULL,
    country text    NOT NULL,
    policy  text    NOT NULL,
    variant integer NOT NULL,
    kind    text    NOT NULL,                      -- 'delivery' (send -> receipt) or 'verify' (issue -> verify)
    le_ms   bigint  NOT NULL,                      -- the bucket's inclusive upper bound; 9223372036854775807: longer
    count   bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, tenant, channel, country, policy, variant, kind, le_ms)
);

-- Sessions per hour x tenant x policy(variant) x path (the channels in order) x status.
CREATE TABLE projections.fallback_paths (
    hour     timestamptz NOT NULL,
    tenant   text    NOT NULL,
    policy   text    NOT NULL,
    variant  integer NOT NULL,
    path     text    NOT NULL,                     -- 'sms>email'
    status   text    NOT NULL,
    sessions bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, tenant, policy, variant, path, status)
);

INSERT INTO checkpoints (subscriber) VALUES ('projector') ON CONFLICT DO NOTHING;

-- The stable views: what docs/ANALYTICS.md documents, column by column. Times are timestamptz, a policy
-- without variants has variant NULL, rates are NULL where the denominator is 0.
CREATE SCHEMA analytics;

CREATE VIEW analytics.sessions AS
SELECT tenant, session, policy, NULLIF(variant, 0) AS variant, country, status, channels,
       cardinality(channels) AS steps_tried, converted_step, converted_channel,
       to_timestamp(issued_ms / 1000.0) AS issued_at,
       to_timestamp(first_sent_ms / 1000.0) AS first_sent_at,
       to_timestamp(first_delivered_ms / 1000.0) AS first_delivered_at,
       to_timestamp(verified_ms / 1000.0) AS verified_at,
       to_timestamp(ended_ms / 1000.0) AS ended_at,
       verified_ms - issued_ms AS issue_to_verify_ms
FROM projections.session_view;

CREATE VIEW analytics.messages AS
SELECT tenant, split_part(stream_id, '/', 2) AS session, step, channel, country, policy,
       NULLIF(variant, 0) AS variant, provider, first_step,
       to_timestamp(issued_ms / 1000.0) AS issued_at,
       to_timestamp(started_ms / 1000.0) AS started_at,
       to_timestamp(sent_ms / 1000.0) AS sent_at,
       to_timestamp(delivered_ms / 1000.0) AS delivered_at,
       to_timestamp(opened_ms / 1000.0) AS opened_at,
       CASE WHEN delivered_ms IS NOT NULL AND sent_ms IS NOT NULL THEN GREATEST(delivered_ms - sent_ms, 0) END
           AS delivery_ms,
       failed, escalated, verified_ms IS NOT NULL AS verified, expired
FROM projections.message_view
WHERE NOT withdrawn OR sent_ms IS NOT NULL;

CREATE VIEW analytics.delivery_hourly AS
SELECT hour, tenant, channel, country, policy, NULLIF(variant, 0) AS variant,
       issued, sent, delivered, failed, opened, escalated, verified, expired,
       round(delivered::numeric / NULLIF(sent, 0), 4) AS delivery_rate,
       round(verified::numeric / NULLIF(issued, 0), 4) AS conversion_rate
FROM projections.delivery_stats;

CREATE VIEW analytics.latency_hourly AS
SELECT hour, tenant, channel, country, policy, NULLIF(variant, 0) AS variant, kind,
       NULLIF(le_ms, 9223372036854775807) AS le_ms, count
FROM projections.delivery_latency;

CREATE VIEW analytics.fallback_paths AS
SELECT hour, tenant, policy, NULLIF(variant, 0) AS variant, path, status, sessions
FROM projections.fallback_paths;

COMMENT ON VIEW analytics.sessions IS 'One row per OTP session: route, outcome and times (otpd read model).';
COMMENT ON VIEW analytics.messages IS 'One row per message (step started) of a session: channel, receipts, outcome.';
COMMENT ON VIEW analytics.delivery_hourly IS 'Counters per hour of issue x tenant x channel x country x policy(variant).';
COMMENT ON VIEW analytics.latency_hourly IS 'Latency histograms (kind delivery or verify) of the delivery_hourly groups; le_ms NULL is the overflow bucket.';
COMMENT ON VIEW analytics.fallback_paths IS 'Sessions per hour of issue x policy(variant) x channel path x status.';
