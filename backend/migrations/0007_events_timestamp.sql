-- The retention job deletes conversation events by their time (backend/retention.py), oldest
-- first in short batches: an index on the time lets each batch find its rows without reading
-- the whole table.
CREATE INDEX IF NOT EXISTS ix_events_timestamp ON events (timestamp);
