-- Versions of a saga (saga._versions): the version each saga runs on and that version's
-- fingerprint when it started (or was migrated), and, for a saga parked because a worker
-- lacked its version, that version: a worker that has it finds the saga here and takes it up.
-- Sagas started before versions are version 1, fingerprint unknown ('').
ALTER TABLE saga_instances
    ADD COLUMN saga_version   integer NOT NULL DEFAULT 1,
    ADD COLUMN fingerprint    text NOT NULL DEFAULT '',
    ADD COLUMN parked_version integer;
CREATE INDEX saga_instances_parked_version ON saga_instances (saga_type, parked_version)
    WHERE parked_version IS NOT NULL;
