-- Time when the orchestrator's own side could not work (Postgres or Kafka unreachable) is
-- not charged to a participant's reply timeout: when a worker gets through again, it moves
-- the pending reply deadlines later by the outage's length. Workers that saw the same outage
-- credit only the part no one credited yet: the union of outages, once.
CREATE TABLE saga_outage_credit (
    id            integer PRIMARY KEY CHECK (id = 1),
    covered_until timestamptz NOT NULL
);
INSERT INTO saga_outage_credit VALUES (1, '-infinity');
