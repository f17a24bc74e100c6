-- Tickets followed in the chat: officers' notes, the channel to answer on, handoffs to a
-- person, and notifications waiting for channels that cannot push (REST).

ALTER TABLE tickets ADD COLUMN channel text;
ALTER TABLE tickets ADD COLUMN assigned_to text;
CREATE INDEX tickets_status_idx ON tickets (status, created_at);
CREATE INDEX tickets_citizen_idx ON tickets (citizen_id, created_at);

CREATE TABLE ticket_notes (
    id          bigserial PRIMARY KEY,
    ticket_id   bigint NOT NULL REFERENCES tickets (id),
    at          timestamptz NOT NULL DEFAULT now(),
    author      text NOT NULL,                  -- 'petugas:<name>', 'warga', 'sistem'
    note        text NOT NULL,                  -- masked when it comes from the chat
    public      boolean NOT NULL DEFAULT false  -- shown to the citizen as "catatan petugas"
);
CREATE INDEX ticket_notes_ticket_idx ON ticket_notes (ticket_id, at);

-- While a row is active, the channels pass the citizen's messages to the officers, not to Rasa.
CREATE TABLE handoffs (
    conversation_id  text PRIMARY KEY,
    ticket_id        bigint NOT NULL REFERENCES tickets (id),
    channel          text NOT NULL,
    active           boolean NOT NULL DEFAULT true,
    started_at       timestamptz NOT NULL,
    ended_at         timestamptz
);

CREATE TABLE notifications (
    id               bigserial PRIMARY KEY,
    conversation_id  text NOT NULL,
    text             text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX notifications_pending_idx ON notifications (conversation_id) WHERE delivered_at IS NULL;
