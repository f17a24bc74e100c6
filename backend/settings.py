"""Configuration read once from the environment, with the defaults of shared/product.md."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

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


def _flag(env: dict, name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    return default if not raw else raw in ("1", "true", "yes", "on")


def _secret(env: dict, name: str, var_dir: Path) -> bytes:
    """A key from the environment, or a development key kept under var/secrets/.

    Replicas in production must share the key, so there it comes from the environment, and
    with REQUIRE_SECRETS set a missing one stops the process instead of diverging per pod;
    a development machine gets a random one that survives restarts.
    """
    raw = env.get(name, "").strip()
    if raw:
        return raw.encode()
    if _flag(env, "REQUIRE_SECRETS", False):
        raise ValueError(f"{name} must be set (REQUIRE_SECRETS is on)")
    path = var_dir / "secrets" / name.lower()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # atomic: the first process to get here wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip().encode()


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

    otp_hash_key: bytes = field(repr=False)
    action_server_token: str = field(repr=False, default="")
    # WHATSAPP_* as read with the rest, for OTP_SENDER=whatsapp (parsed by whatsapp.settings).
    whatsapp_env: tuple = field(repr=False, default=())

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
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
            otp_hash_key=_secret(env, "OTP_HASH_KEY", var_dir),
            action_server_token=_secret(env, "ACTION_SERVER_TOKEN", var_dir).decode(),
            whatsapp_env=tuple(sorted((k, v) for k, v in env.items() if k.startswith("WHATSAPP_"))),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
