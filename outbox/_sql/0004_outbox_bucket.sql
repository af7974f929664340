-- Relays share the outbox by bucket: each publishes the buckets it holds (outbox/_buckets.py).
-- A bucket is a hash of the key, so every message of one key is in one bucket and keeps its
-- order whichever relay holds it. 64 buckets: at most 64 relays publish at once. (Rewrites the
-- table, which holds only what is not published yet.) No index: the claim reads in id order
-- and skips the rows of other relays' buckets.
ALTER TABLE outbox ADD COLUMN bucket smallint NOT NULL
    GENERATED ALWAYS AS ((hashtext(key) & 63)::smallint) STORED;
