-- A WhatsApp message taken in stays pending until its turn ran: Meta was answered 200 at once,
-- so a turn that failed (Rasa restarting, database down, timed out) is tried again from here.
-- `message` holds what the channel needs to try again, only while pending (NULL once answered);
-- `retry_at` NULL means answered (or given up), else when it may be tried again (a lease).
ALTER TABLE whatsapp_seen_messages
    ADD COLUMN message  jsonb,
    ADD COLUMN attempts integer NOT NULL DEFAULT 1,
    ADD COLUMN retry_at timestamptz;
CREATE INDEX whatsapp_seen_messages_pending_idx ON whatsapp_seen_messages (retry_at)
    WHERE retry_at IS NOT NULL;
