-- The read model of every saga: a projection of its event stream, written in the same
-- transaction as the events. `saga rebuild` can recreate it from the events alone.
CREATE TABLE saga_instances (
    saga_id     text PRIMARY KEY,
    saga_type   text NOT NULL,
    key         text,
    status      text NOT NULL,
    step        text,
    version     bigint NOT NULL,
    data        jsonb NOT NULL,
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX saga_instances_status ON saga_instances (status, saga_type);

-- At most one pending deadline per saga: a reply timeout or a scheduled retry.
CREATE TABLE saga_deadlines (
    saga_id     text PRIMARY KEY,
    saga_type   text NOT NULL,
    step        text NOT NULL,
    phase       text NOT NULL,
    attempt     integer NOT NULL,
    kind        text NOT NULL,
    due_at      timestamptz NOT NULL
);
CREATE INDEX saga_deadlines_due ON saga_deadlines (due_at);
