-- Pacing and abuse limits. Destinations appear only as keyed hashes (HMAC under the server secret), never in
-- clear: the limits can count them without storing personal data.
CREATE TABLE sends (
    destination_key text   NOT NULL,
    channel         text   NOT NULL,
    country         text,
    tenant          text   NOT NULL,
    at_ms           bigint NOT NULL
);
CREATE INDEX sends_destination ON sends (destination_key, at_ms);
CREATE INDEX sends_country ON sends (country, at_ms) WHERE country IS NOT NULL;
CREATE INDEX sends_tenant ON sends (tenant, at_ms);

CREATE TABLE session_starts (
    destination_key text   NOT NULL,
    at_ms           bigint NOT NULL
);
CREATE INDEX session_starts_destination ON session_starts (destination_key, at_ms);

-- Consecutive failed verifications per destination, across sessions (NIST SP 800-63B caps them at 100).
-- An operator clears a blocked destination by deleting its row.
CREATE TABLE destination_failures (
    destination_key text    PRIMARY KEY,
    consecutive     integer NOT NULL
);
