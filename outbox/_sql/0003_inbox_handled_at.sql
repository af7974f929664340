-- Inbox retention deletes a group's rows by age. IF NOT EXISTS: on a large inbox an operator
-- may build it beforehand with CREATE INDEX CONCURRENTLY (this migration would lock writes).
CREATE INDEX IF NOT EXISTS inbox_handled_at ON inbox (consumer_group, handled_at);
