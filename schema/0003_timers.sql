-- Durable timers: the deadlines a session waits for (its step's timeout, its expiry), derived from its state
-- and written in the transaction that appends the events which set or clear them. The scheduler claims due
-- rows with FOR UPDATE SKIP LOCKED and a short lease; `token` names the state version that set the deadline,
-- so a stale firing is ignored by the domain and a deadline yields exactly one event across instances.
CREATE TABLE timers (
    stream_id       text    NOT NULL,
    name            text    NOT NULL,
    due_ms          bigint  NOT NULL,
    token           integer NOT NULL,
    leased_until_ms bigint,
    PRIMARY KEY (stream_id, name)
);

CREATE INDEX timers_due ON timers (due_ms);
