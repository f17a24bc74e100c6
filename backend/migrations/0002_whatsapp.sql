-- WhatsApp message ids (wamid) already taken in: Meta redelivers a webhook it thinks failed,
-- for up to 7 days, possibly to another replica; each message must reach Rasa only once.
CREATE TABLE whatsapp_seen_messages (
    wamid        text PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX whatsapp_seen_messages_received_idx ON whatsapp_seen_messages (received_at);
