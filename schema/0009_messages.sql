-- Every message handed to a provider, so an answer that names a message (a provider's receipt, the e-mail's
-- open-tracking image) finds its session and step through the store, never by parsing an id. Written just
-- before the provider call (with the tracking token) and completed with the provider's reference in the
-- transaction that records `sent`. No personal data: ids, a channel and a keyed hash. A session's rows go
-- when it is erased; the janitor removes rows older than a week.
CREATE TABLE messages (
    message_id   text PRIMARY KEY,
    stream_id    text NOT NULL,
    token        integer NOT NULL,
    channel      text NOT NULL,
    tracking     text NOT NULL UNIQUE,
    provider_ref text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX messages_provider_ref ON messages (channel, provider_ref) WHERE provider_ref IS NOT NULL;
CREATE INDEX messages_stream ON messages (stream_id);
CREATE INDEX messages_created ON messages (created_at);
