-- One deadline row per (saga, step), not per saga: a parallel group has a reply deadline for
-- each member in flight, and a timer, a signal wait or a child step each keeps its own. The
-- rows already there (at most one per saga) are unique on (saga_id, step) too, so they stay
-- as they are and fire as before. saga_id leads the key: a saga's rows are still found (and
-- cleared when it ends) through the key's index.
ALTER TABLE saga_deadlines DROP CONSTRAINT saga_deadlines_pkey;
ALTER TABLE saga_deadlines ADD PRIMARY KEY (saga_id, step);
