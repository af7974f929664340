-- The event log. Readers of the global feed order by (tx_id, position): tx_id is the id of
-- the writing transaction (see eventstore/_store.py for why this never skips an event).
CREATE TABLE es_events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id           bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    stream_id       text NOT NULL,
    version         bigint NOT NULL CHECK (version >= 1),
    event_id        uuid NOT NULL,
    type            text NOT NULL,
    schema_version  integer NOT NULL,
    data            jsonb NOT NULL,
    metadata        jsonb NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT es_events_stream_version UNIQUE (stream_id, version),
    CONSTRAINT es_events_event_id UNIQUE (event_id)
);

CREATE INDEX es_events_feed ON es_events (tx_id, position);

CREATE TABLE es_snapshots (
    stream_id       text PRIMARY KEY,
    version         bigint NOT NULL,
    type            text NOT NULL,
    schema_version  integer NOT NULL,
    data            jsonb NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE es_checkpoints (
    subscriber      text PRIMARY KEY,
    tx_id           bigint NOT NULL,
    position        bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
