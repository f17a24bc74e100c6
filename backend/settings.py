"""Configuration read once from the environment, with the defaults of shared/product.md."""

from __future__ import annotations

import base64
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import secret_rules
from .signing import key_id, private_key_from_text, public_keys_from_text

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _int(env: dict, name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from exc
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _number(env: dict, name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from exc
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _flag(env: dict, name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    return default if not raw else raw in ("1", "true", "yes", "on")


def _secret(env: dict, name: str, var_dir: Path,
            generate: Callable[[], str] = lambda: secrets.token_hex(32)) -> bytes:
    """A key from the environment, or a development key kept under var/secrets/.

    Replicas in production must share the key, so there it comes from the environment, and
    with REQUIRE_SECRETS set a missing one stops the process instead of diverging per pod;
    a development machine gets a random one that survives restarts.
    """
    raw = env.get(name, "").strip()
    if raw:
        secret_rules.check({name: raw, "REQUIRE_SECRETS": env.get("REQUIRE_SECRETS", "")}, [name])
        return raw.encode()
    if _flag(env, "REQUIRE_SECRETS", False):
        raise ValueError(f"{name} must be set (REQUIRE_SECRETS is on)")
    path = _private_dir(var_dir / "secrets") / name.lower()
    if not path.exists():
        # mkstemp opens with O_CREAT|O_EXCL and mode 0600: the key is never readable by others,
        # not even between creating the file and a chmod.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name.lower()}.")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(generate())
            os.link(tmp, path)  # atomic: the first process to get here wins
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)  # one created by an older version, before the umask was ignored
    return path.read_text().strip().encode()


def _private_dir(path: Path) -> Path:
    """var/secrets: created 0700, and tightened to 0700 when it exists looser."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def _signing_key(env: dict, var_dir: Path) -> Ed25519PrivateKey:
    # A development key is 32 random bytes in the same form the environment takes (base64).
    raw = _secret(env, "CERTIFICATE_SIGNING_KEY", var_dir,
                  generate=lambda: base64.b64encode(secrets.token_bytes(32)).decode())
    return private_key_from_text(raw.decode())


def _public_keys(env: dict, signing_key: Ed25519PrivateKey) -> tuple[Ed25519PublicKey, ...]:
    """CERTIFICATE_PUBLIC_KEYS, or else the signing key's own public key.

    Old keys stay in the list after a rotation so that certificates already printed still
    verify; the list must hold the current key, or every certificate issued from now on
    would be refused by the verifiers.
    """
    raw = env.get("CERTIFICATE_PUBLIC_KEYS", "").strip()
    if not raw:
        return (signing_key.public_key(),)
    keys = tuple(public_keys_from_text(raw))
    if key_id(signing_key.public_key()) not in {key_id(k) for k in keys}:
        raise ValueError("CERTIFICATE_PUBLIC_KEYS must include the public key of CERTIFICATE_SIGNING_KEY")
    return keys


def verification_keys(env: dict | None = None) -> tuple[Ed25519PublicKey, ...]:
    """The public keys a verifier trusts, read without the other settings: a machine that only
    checks certificates has CERTIFICATE_PUBLIC_KEYS and no private key. On a development
    machine without it, the development signing key's public key."""
    env = dict(os.environ if env is None else env)
    raw = env.get("CERTIFICATE_PUBLIC_KEYS", "").strip()
    if raw:
        return tuple(public_keys_from_text(raw))
    if _flag(env, "REQUIRE_SECRETS", False) and not env.get("CERTIFICATE_SIGNING_KEY", "").strip():
        raise ValueError("CERTIFICATE_PUBLIC_KEYS must be set (REQUIRE_SECRETS is on)")
    var_dir = Path(env.get("VAR_DIR") or PROJECT_ROOT / "var")
    return (_signing_key(env, var_dir).public_key(),)


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    database_url: str | None
    db_pool_max: int
    db_statement_timeout_ms: int

    otp_ttl_seconds: int
    otp_max_attempts: int
    otp_resend_seconds: int
    otp_max_sends_per_hour: int
    otp_max_sends_per_minute: int
    session_ttl_seconds: int
    otp_sender: str
    otp_outbox: Path
    sms_gateway_url: str | None
    sms_gateway_token: str | None

    public_base_url: str
    certificate_link_ttl_seconds: int
    seed_demo_data: bool
    officer_hours: str
    officer_days: str

    otp_hash_key: bytes = field(repr=False)
    action_server_token: str = field(repr=False, default="")
    # WHATSAPP_* as read with the rest, for OTP_SENDER=whatsapp (parsed by whatsapp.settings).
    whatsapp_env: tuple = field(repr=False, default=())
    # The key that signs the certificates' QR payloads, and the public keys that verify them.
    certificate_signing_key: Ed25519PrivateKey | None = field(repr=False, default=None, compare=False)
    certificate_public_keys: tuple = field(repr=False, default=(), compare=False)
    # First wait before a failed OTP delivery is tried again (doubling each time, at most 60 s).
    otp_delivery_retry_seconds: float = 1.0

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        # Placeholders and short secrets stop the process (REQUIRE_SECRETS=1, backend/secret_rules.py).
        secret_rules.check(env, secret_rules.ACTION_SERVER)
        var_dir = Path(env.get("VAR_DIR") or PROJECT_ROOT / "var")
        var_dir.mkdir(parents=True, exist_ok=True)
        return cls(
            var_dir=var_dir,
            database_url=env.get("DATABASE_URL") or None,
            db_pool_max=_int(env, "DB_POOL_MAX", 8),
            db_statement_timeout_ms=_int(env, "DB_STATEMENT_TIMEOUT_MS", 3000),
            otp_ttl_seconds=_int(env, "OTP_TTL_SECONDS", 300),
            otp_max_attempts=_int(env, "OTP_MAX_ATTEMPTS", 5),
            otp_resend_seconds=_int(env, "OTP_RESEND_SECONDS", 60),
            otp_max_sends_per_hour=_int(env, "OTP_MAX_SENDS_PER_HOUR", 5),
            otp_max_sends_per_minute=_int(env, "OTP_MAX_SENDS_PER_MINUTE", 120),
            session_ttl_seconds=_int(env, "SESSION_TTL_SECONDS", 900),
            otp_sender=env.get("OTP_SENDER", "outbox"),
            otp_outbox=Path(env.get("OTP_OUTBOX") or var_dir / "outbox.jsonl"),
            sms_gateway_url=env.get("SMS_GATEWAY_URL") or None,
            sms_gateway_token=env.get("SMS_GATEWAY_TOKEN") or None,
            public_base_url=(env.get("PUBLIC_BASE_URL") or "http://localhost:5055").rstrip("/"),
            certificate_link_ttl_seconds=_int(env, "CERTIFICATE_LINK_TTL_SECONDS", 900),
            # The demo citizens' numbers are real-looking: never seed them in production.
            seed_demo_data=_flag(env, "SEED_DEMO_DATA", True),
            # When officers answer handed-over conversations (WIB); days 0-5 = Monday-Saturday.
            officer_hours=env.get("OFFICER_HOURS") or "08:00-20:00",
            officer_days=env.get("OFFICER_DAYS") or "0-5",
            otp_hash_key=_secret(env, "OTP_HASH_KEY", var_dir),
            action_server_token=_secret(env, "ACTION_SERVER_TOKEN", var_dir).decode(),
            whatsapp_env=tuple(sorted((k, v) for k, v in env.items() if k.startswith("WHATSAPP_"))),
            certificate_signing_key=(signing_key := _signing_key(env, var_dir)),
            certificate_public_keys=_public_keys(env, signing_key),
            otp_delivery_retry_seconds=_number(env, "OTP_DELIVERY_RETRY_SECONDS", 1.0),
        )


def database_url(var_dir: Path, env: dict | None = None) -> str:
    """DATABASE_URL, or the embedded server's URL under var_dir/pgdata (started if needed): the
    same database as `make run`, for the jobs run by hand (backend.migrate, backend.retention)."""
    url = (os.environ if env is None else env).get("DATABASE_URL")
    if url:
        return url
    from . import embedded

    logging.getLogger(__name__).info("no DATABASE_URL: using the embedded PostgreSQL in %s", var_dir / "pgdata")
    return embedded.start(var_dir / "pgdata")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
