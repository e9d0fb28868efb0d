-- Which sessions a destination has, by the same keyed hash pacing counts it by (tenant and address), so an
-- operator can erase every session of one person (`otpctl erase --destination`) without decrypting anything.
-- Written at ISSUE; a session's rows go when it is erased.
CREATE TABLE destination_sessions (
    destination_key text NOT NULL,
    stream_id       text NOT NULL,
    PRIMARY KEY (destination_key, stream_id)
);

CREATE INDEX destination_sessions_stream ON destination_sessions (stream_id);
