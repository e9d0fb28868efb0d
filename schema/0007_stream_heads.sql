-- Each stream's head: its last version and a MAC over (stream, version, last hash) under the chain key, written
-- in every append. With the per-event hashes keyed too (HMAC-SHA256 under a key derived from the server
-- secret), SQL access alone can neither re-hash an edited chain nor delete a stream's last events unnoticed:
-- the head names the version the stream must reach, and only the key can make a head that verifies.
CREATE TABLE stream_heads (
    stream_id text    PRIMARY KEY,
    version   integer NOT NULL CHECK (version >= 1),
    mac       bytea   NOT NULL
);

COMMENT ON TABLE events IS 'Append-only event log; every row chained within its stream by HMAC-SHA256 under the chain key.';
