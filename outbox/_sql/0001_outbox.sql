-- Messages waiting to be published. The relay publishes them in id order and deletes them
-- once Kafka has acknowledged them.
CREATE TABLE outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  uuid NOT NULL,
    topic       text NOT NULL,
    key         text NOT NULL,
    value       bytea NOT NULL,
    headers     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Messages already handled, per consumer group: the effectively-once guard.
CREATE TABLE inbox (
    consumer_group  text NOT NULL,
    message_id      uuid NOT NULL,
    message_type    text NOT NULL,
    handled_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, message_id)
);
