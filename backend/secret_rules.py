"""What a production secret must look like (REQUIRE_SECRETS=1): no placeholder, long enough.

A placeholder copied from deploy/ (`PLACEHOLDER-CHANGE-ME...`) or a short, guessable value
would run the service with a key anyone can read in this repository. Each process checks the
secrets it reads when it starts, and refuses to start with a message that names the variable,
never its value (the message lands in logs and in `kubectl describe`).

Rules, kept simple on purpose (docs/security.md):
- a placeholder: the value contains, in any case, one of PLACEHOLDER_MARKERS ("placeholder",
  "changeme", "change-me", "change_me", "example", "<", ">", "..."), or is one character
  repeated ("xxxxxxxx");
- too short: fewer than MIN_BYTES bytes for the secrets we generate ourselves
  (`openssl rand -hex 32` gives 64). Secrets issued by someone else (Meta's access token, the
  SMS gateway's token) have their issuer's format: only the placeholder rule applies.
- CERTIFICATE_SIGNING_KEY has its own format (32 raw bytes in base64, or a PEM), checked when it
  is parsed (backend/signing.py); the placeholder rule applies first.
- database passwords (in DATABASE_URL, TRACKER_DB_PASSWORD): when there is one it follows the
  rules; none at all is allowed (certificate or IAM authentication carry no password).
"""

from __future__ import annotations

from typing import Iterable, Mapping

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

MIN_BYTES = 32

# Markers of a value nobody meant to keep ("xxxx..." is caught as one repeated character).
# Words of 7 letters or more, and characters that hex, base64 and Meta's tokens never contain:
# a shorter word ("xxx", "todo") would turn up by chance in about one long random token in
# a thousand, refusing a real secret.
PLACEHOLDER_MARKERS = ("placeholder", "changeme", "change-me", "change_me", "example", "<", ">", "...")

# Secret -> minimum length in bytes (0: the issuer's format, only the placeholder rule).
RULES = {
    "OTP_HASH_KEY": MIN_BYTES,            # HMAC-SHA256 key of the OTP codes: 256 bits
    "ACTION_SERVER_TOKEN": MIN_BYTES,     # bearer token between Rasa and the action server
    "REDIS_PASSWORD": MIN_BYTES,          # Redis AUTH; Redis checks passwords fast: guessable when short
    "WHATSAPP_APP_SECRET": MIN_BYTES,     # Meta's app secret is 32 hex characters
    "WHATSAPP_VERIFY_TOKEN": MIN_BYTES,   # chosen by us; travels in the handshake's query string
    "TRACKER_DB_PASSWORD": MIN_BYTES,
    "DATABASE_URL": MIN_BYTES,            # its password
    "WHATSAPP_ACCESS_TOKEN": 0,           # Meta's format (about 200 characters)
    "SMS_GATEWAY_TOKEN": 0,               # the gateway's format
    "CERTIFICATE_SIGNING_KEY": 0,         # its own format, parsed by backend/signing.py
}

# The secrets each process reads (tests/deploy_support.py: REQUIRED_SECRETS says which must be
# set).
ACTION_SERVER = ("OTP_HASH_KEY", "ACTION_SERVER_TOKEN", "CERTIFICATE_SIGNING_KEY", "DATABASE_URL",
                 "SMS_GATEWAY_TOKEN", "WHATSAPP_ACCESS_TOKEN")
RASA = ("ACTION_SERVER_TOKEN", "TRACKER_DB_PASSWORD", "DATABASE_URL", "REDIS_PASSWORD",
        "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN", "WHATSAPP_ACCESS_TOKEN")
DATABASE_ONLY = ("DATABASE_URL",)  # the retention job, the migration


class WeakSecret(ValueError):
    """A secret that must not be used; the message names the variable, never the value."""


def required(env: Mapping[str, str]) -> bool:
    return (env.get("REQUIRE_SECRETS") or "").strip().lower() in ("1", "true", "yes", "on")


def problem(name: str, value: str) -> str | None:
    """Why this value of that secret is refused, without quoting it; None when it is fine."""
    value = value.strip()
    minimum = RULES.get(name, MIN_BYTES)
    label = "the password in DATABASE_URL" if name == "DATABASE_URL" else name
    if any(marker in value.lower() for marker in PLACEHOLDER_MARKERS) or (value and len(set(value)) == 1):
        return f"{label} is a placeholder: set a real secret (e.g. openssl rand -hex 32)"
    if minimum and len(value.encode()) < minimum:
        return f"{label} is too short ({len(value.encode())} bytes, at least {minimum}): e.g. openssl rand -hex 32"
    return None


def _value(env: Mapping[str, str], name: str) -> str:
    if name == "DATABASE_URL":
        url = env.get(name) or ""
        try:
            return conninfo_to_dict(url).get("password", "") if url else ""
        except ProgrammingError:
            raise WeakSecret("DATABASE_URL is not a valid PostgreSQL URL") from None
    return env.get(name) or ""


def check(env: Mapping[str, str], names: Iterable[str]) -> None:
    """With REQUIRE_SECRETS on, raise WeakSecret for the first set secret that breaks a rule.
    Unset ones are left to the code that needs them (it refuses to start without them)."""
    if not required(env):
        return
    for name in names:
        value = _value(env, name)
        if value.strip():
            reason = problem(name, value)
            if reason:
                raise WeakSecret(reason)
