-- Stream ids are identifiers: compare them byte-wise. Under a language collation a range of
-- the (stream_id, version) index is not a prefix range (punctuation may be ignored), so
-- `EventStore.stream_ids(prefix)` could not use it; with "C" it can, and comparisons are
-- cheaper too. Rebuilds the index on stream_id (no table rewrite).
ALTER TABLE es_events ALTER COLUMN stream_id SET DATA TYPE text COLLATE "C";
