-- A deadline whose decision keeps failing backs off, counts its failures, and is parked with
-- its reason after too many: it no longer comes due, and `saga ls --stuck` shows it.
ALTER TABLE saga_deadlines
    ADD COLUMN failures   integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error text,
    ADD COLUMN parked_at  timestamptz;
DROP INDEX saga_deadlines_due;
CREATE INDEX saga_deadlines_due ON saga_deadlines (due_at) WHERE parked_at IS NULL;
