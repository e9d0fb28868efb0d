-- The event log: one row per event, one stream per OTP session.
-- `data` is `json` (not jsonb) so the exact text that was hashed is kept byte for byte.
-- Subscribers read in (tx_id, position) order below the oldest running transaction
-- (pg_snapshot_xmin), so an event that commits late is never skipped.
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
);

CREATE INDEX events_log_order ON events (tx_id, position);

COMMENT ON TABLE events IS 'Append-only event log; every row chained by SHA-256 within its stream.';
COMMENT ON COLUMN events.at_ms IS 'Database clock at append, Unix epoch milliseconds.';

-- Subscriber checkpoints: the last (tx_id, position) each subscriber has processed.
CREATE TABLE checkpoints (
    subscriber text   PRIMARY KEY,
    tx_id      xid8   NOT NULL DEFAULT '0',
    position   bigint NOT NULL DEFAULT 0
);
