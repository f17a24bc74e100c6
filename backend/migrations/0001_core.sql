-- Citizens and their vaccinations, the OTP verification state, certificate links, tickets, audit.

-- One account per registered phone number; a family shares one account.
CREATE TABLE accounts (
    id          bigserial PRIMARY KEY,
    phone       text NOT NULL UNIQUE,            -- E.164, e.g. +6281234567001
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE citizens (
    id          bigserial PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES accounts (id),
    nik         char(16) NOT NULL UNIQUE,
    full_name   text NOT NULL,
    birth_date  date NOT NULL,
    email       text,
    version     integer NOT NULL DEFAULT 1,      -- bumped on every change; keys cached certificates
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX citizens_account_idx ON citizens (account_id);

CREATE TABLE vaccinations (
    id             bigserial PRIMARY KEY,
    citizen_id     bigint NOT NULL REFERENCES citizens (id),
    dose           smallint NOT NULL CHECK (dose BETWEEN 1 AND 3),
    vaccine        text NOT NULL,
    vaccinated_on  date NOT NULL,
    facility       text NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (citizen_id, dose)
);

-- A vaccination without a row here is recorded but its certificate is still being processed.
CREATE TABLE certificates (
    id                  bigserial PRIMARY KEY,
    vaccination_id      bigint NOT NULL UNIQUE REFERENCES vaccinations (id),
    certificate_number  text NOT NULL UNIQUE,
    issued_at           timestamptz NOT NULL DEFAULT now()
);

-- Codes are never stored: only an HMAC of them, keyed by a secret outside the database.
CREATE TABLE otp_challenges (
    id               bigserial PRIMARY KEY,
    conversation_id  text NOT NULL,
    phone            text NOT NULL,
    purpose          text NOT NULL CHECK (purpose IN ('login', 'change_phone')),
    code_hash        bytea NOT NULL,
    delivered        boolean NOT NULL,           -- false when the number is unknown: nothing sent
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    consumed_at      timestamptz,
    voided_at        timestamptz
);
CREATE INDEX otp_challenges_phone_idx ON otp_challenges (phone, created_at);
CREATE INDEX otp_challenges_conversation_idx ON otp_challenges (conversation_id, created_at);
CREATE INDEX otp_challenges_created_idx ON otp_challenges (created_at);

-- The only source of truth for "this conversation is verified".
CREATE TABLE auth_sessions (
    conversation_id  text PRIMARY KEY,
    account_id       bigint NOT NULL REFERENCES accounts (id),
    citizen_id       bigint REFERENCES citizens (id),
    verified_at      timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL
);

-- Download links: the token is given to the citizen, only its SHA-256 is kept.
CREATE TABLE certificate_links (
    token_hash       bytea PRIMARY KEY,
    certificate_id   bigint NOT NULL REFERENCES certificates (id),
    conversation_id  text NOT NULL,
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL
);
CREATE INDEX certificate_links_expires_idx ON certificate_links (expires_at);

CREATE SEQUENCE ticket_number_seq;

CREATE TABLE tickets (
    id               bigserial PRIMARY KEY,
    reference        text NOT NULL UNIQUE,       -- PL-2026-000123
    citizen_id       bigint REFERENCES citizens (id),
    conversation_id  text,
    category         text NOT NULL,
    description      text NOT NULL,
    status           text NOT NULL DEFAULT 'diterima'
                     CHECK (status IN ('diterima', 'diproses', 'selesai', 'ditolak')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_log (
    id               bigserial PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT now(),
    conversation_id  text,
    actor            text NOT NULL,              -- masked, e.g. NIK 3174********0001
    citizen_id       bigint REFERENCES citizens (id),
    action           text NOT NULL,
    detail           jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_citizen_idx ON audit_log (citizen_id, at);
