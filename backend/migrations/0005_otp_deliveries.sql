-- OTP codes waiting to be delivered: the citizen's reply does not wait for the SMS/WhatsApp
-- gateway, and a slow or failing gateway loses no code. Any action-server process drains the
-- queue (FOR UPDATE SKIP LOCKED). The code is stored only sealed (AES-GCM under a key derived
-- from OTP_HASH_KEY, which is not in the database); a row goes once delivered or expired.
CREATE TABLE otp_deliveries (
    id               bigserial PRIMARY KEY,
    challenge_id     bigint NOT NULL UNIQUE REFERENCES otp_challenges (id) ON DELETE CASCADE,
    phone            text NOT NULL,
    purpose          text NOT NULL,
    sealed_code      bytea NOT NULL,             -- nonce (12 bytes) || AES-GCM ciphertext and tag
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,       -- also the lease of the process sending it
    expires_at       timestamptz NOT NULL        -- the code's own expiry: no use after it
);
CREATE INDEX otp_deliveries_due_idx ON otp_deliveries (next_attempt_at);
CREATE INDEX otp_deliveries_expires_idx ON otp_deliveries (expires_at);
