-- Instant messages for users who had no binding when they were sent (RFC 3428 is silent;
-- OCS-era clients expect them on their next sign-in). Delivered in id order, deleted on 2xx.
CREATE TABLE offline_messages (
    id           BIGSERIAL PRIMARY KEY,
    recipient    TEXT NOT NULL,
    sender       TEXT NOT NULL,
    content_type TEXT NOT NULL,
    body         BYTEA NOT NULL,
    received_at  BIGINT NOT NULL
);
CREATE INDEX offline_messages_recipient ON offline_messages(recipient, id);
CREATE INDEX offline_messages_received_at ON offline_messages(received_at);
