-- HCP schema, version 5: the audit stream's retention by time window and its publishing outbox.
-- (Versions 3 and 4 belong to job leases and server groups; each migration is applied once by
-- its own version number, in order, whatever other versions a database already has.)

-- The time an event happened, as a column, so retention deletes by an index range.
ALTER TABLE events ADD COLUMN at timestamptz;
UPDATE events SET at = (doc->>'at')::timestamptz WHERE at IS NULL;
ALTER TABLE events ALTER COLUMN at SET NOT NULL;
CREATE INDEX events_at ON events (at);

-- The events not yet published (to NATS JetStream), written in the transaction that appends the
-- event and removed once the publisher has delivered it. Events from before this version are
-- not queued. Retention drops an event's entry with the event.
CREATE TABLE event_outbox (
    seq bigint PRIMARY KEY REFERENCES events (seq) ON DELETE CASCADE
);
