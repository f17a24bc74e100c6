-- Rasa's conversation events, as Rasa's SQL tracker store would create them (same columns, types,
-- sequence and index): created here so that Rasa's database role needs no CREATE privilege. A
-- database where Rasa created the table already keeps it as it is.
CREATE TABLE IF NOT EXISTS events (
    id           serial PRIMARY KEY,
    sender_id    varchar(255) NOT NULL,
    type_name    varchar(255) NOT NULL,
    timestamp    double precision,
    intent_name  varchar(255),
    action_name  varchar(255),
    data         text
);
CREATE INDEX IF NOT EXISTS ix_events_sender_id ON events (sender_id);
