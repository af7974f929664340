-- Rows Kafka refused for good (record too large, invalid topic, not authorized): moved out of
-- the outbox with the error, so they neither block the messages behind them nor get lost.
CREATE TABLE outbox_dead (
    id          bigint PRIMARY KEY,
    message_id  uuid NOT NULL,
    topic       text NOT NULL,
    key         text NOT NULL,
    value       bytea NOT NULL,
    headers     jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    error       text NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now()
);
