-- Per-session data keys (crypto-shredding): destinations in events are sealed with the session's key,
-- itself sealed under a key derived from the server secret. Deleting a row erases the person.
CREATE TABLE session_keys (
    stream_id  text        PRIMARY KEY,
    sealed_key bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Messages to send: written in the transaction that starts a step, claimed by the dispatcher.
-- `token` is the stream version that started the step; (stream_id, token) sends at most once.
CREATE TABLE outbox (
    stream_id    text        NOT NULL,
    token        integer     NOT NULL,
    step         integer     NOT NULL,
    channel      text        NOT NULL,
    attempts     integer     NOT NULL DEFAULT 0,
    available_at timestamptz NOT NULL DEFAULT now(),
    leased_until timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, token)
);

CREATE INDEX outbox_available ON outbox (available_at);
