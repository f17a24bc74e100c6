"""The WhatsApp channel's configuration, read once from the environment (docs/whatsapp.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_API_BASE_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v23.0"
# Meta redelivers a webhook for up to 7 days: a seen message id must be kept at least as long.
MIN_DEDUPE_DAYS = 7
# How far ahead of our clock a message's timestamp may be (Meta's clock and ours differ by
# seconds); later than that it is implausible and ignored.
MAX_CLOCK_AHEAD_SECONDS = 300


def _number(env: dict, name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum:g}, got {raw}")
    return value


@dataclass(frozen=True)
class WhatsAppSettings:
    api_base_url: str = DEFAULT_API_BASE_URL
    api_version: str = DEFAULT_API_VERSION
    phone_number_id: str = ""
    access_token: str = field(default="", repr=False)
    app_secret: str = field(default="", repr=False)
    verify_token: str = field(default="", repr=False)
    # The authentication template (category AUTHENTICATION, copy-code button) for OTP_SENDER=whatsapp.
    otp_template: str = "kode_verifikasi"
    otp_template_language: str = "id"
    # A UTILITY template with one body variable ({{1}}), for ticket outcomes after 24 hours.
    notice_template: str = "pembaruan_laporan"
    http_timeout_seconds: float = 10.0
    retry_attempts: int = 4
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 8.0
    turn_timeout_seconds: float = 10.0
    dedupe_days: int = MIN_DEDUPE_DAYS
    max_concurrent_turns: int = 32
    database_url: str = field(default="", repr=False)
    db_pool_max: int = 4
    # The action server's public base (PUBLIC_BASE_URL); inside a cluster the PDF is fetched from
    # the action server directly when CERTIFICATE_INTERNAL_BASE_URL is set (e.g. http://actions:5055).
    public_base_url: str = "http://localhost:5055"
    internal_base_url: str = ""
    shutdown_grace_seconds: float = 20.0
    # Messages whose turn failed are tried again (whatsapp/dedupe.py): looked for every
    # pending_poll_seconds, first after pending_retry_seconds, doubling up to 5 minutes.
    pending_poll_seconds: float = 2.0
    pending_retry_seconds: float = 5.0
    # How long a message being handled is not tried again elsewhere: well beyond a turn (cancelled
    # at turn_timeout_seconds) and its wait behind the same citizen's earlier messages. A process
    # killed mid-turn leaves its messages to be taken up after this.
    pending_lease_seconds: float = 60.0

    @classmethod
    def from_env(cls, env: dict | None = None) -> "WhatsAppSettings":
        env = dict(os.environ if env is None else env)
        return cls(
            api_base_url=(env.get("WHATSAPP_API_BASE_URL") or DEFAULT_API_BASE_URL).rstrip("/"),
            api_version=(env.get("WHATSAPP_API_VERSION") or DEFAULT_API_VERSION).strip("/"),
            phone_number_id=(env.get("WHATSAPP_PHONE_NUMBER_ID") or "").strip(),
            access_token=(env.get("WHATSAPP_ACCESS_TOKEN") or "").strip(),
            app_secret=(env.get("WHATSAPP_APP_SECRET") or "").strip(),
            verify_token=(env.get("WHATSAPP_VERIFY_TOKEN") or "").strip(),
            otp_template=(env.get("WHATSAPP_OTP_TEMPLATE") or "kode_verifikasi").strip(),
            otp_template_language=(env.get("WHATSAPP_OTP_TEMPLATE_LANGUAGE") or "id").strip(),
            notice_template=(env.get("WHATSAPP_NOTICE_TEMPLATE") or "pembaruan_laporan").strip(),
            http_timeout_seconds=_number(env, "WHATSAPP_HTTP_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            retry_attempts=int(_number(env, "WHATSAPP_RETRY_ATTEMPTS", 4, minimum=1)),
            retry_base_seconds=_number(env, "WHATSAPP_RETRY_BASE_SECONDS", 0.5),
            retry_max_seconds=_number(env, "WHATSAPP_RETRY_MAX_SECONDS", 8.0),
            # The same knob as the REST channel: how long Rasa may think before we apologise.
            turn_timeout_seconds=_number(env, "TURN_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            dedupe_days=int(_number(env, "WHATSAPP_DEDUPE_DAYS", MIN_DEDUPE_DAYS, minimum=MIN_DEDUPE_DAYS)),
            max_concurrent_turns=int(_number(env, "WHATSAPP_MAX_CONCURRENT_TURNS", 32, minimum=1)),
            database_url=env.get("DATABASE_URL") or "",
            db_pool_max=int(_number(env, "WHATSAPP_DB_POOL_MAX", 4, minimum=1)),
            public_base_url=(env.get("PUBLIC_BASE_URL") or "http://localhost:5055").rstrip("/"),
            internal_base_url=(env.get("CERTIFICATE_INTERNAL_BASE_URL") or "").rstrip("/"),
            shutdown_grace_seconds=_number(env, "WHATSAPP_SHUTDOWN_GRACE_SECONDS", 20.0),
            pending_poll_seconds=_number(env, "WHATSAPP_PENDING_POLL_SECONDS", 2.0, minimum=0.05),
            pending_retry_seconds=_number(env, "WHATSAPP_PENDING_RETRY_SECONDS", 5.0, minimum=0.05),
            pending_lease_seconds=_number(env, "WHATSAPP_PENDING_LEASE_SECONDS",
                                          max(60.0, 4 * _number(env, "TURN_TIMEOUT_SECONDS", 10.0, minimum=0.1)),
                                          minimum=1.0),
        )

    def certificate_url(self, token: str) -> str:
        """Where the channel fetches a certificate: always the action server's own base (the
        internal address when one is set), the URL built here from a token checked by the caller."""
        return f"{self.internal_base_url or self.public_base_url}/certificates/{token}.pdf"

    @property
    def message_max_age_seconds(self) -> int:
        """Messages older than this are ignored: their id may already be forgotten by the
        dedupe store (kept dedupe_days from arrival, and arrival may be up to
        MAX_CLOCK_AHEAD_SECONDS before the message's own timestamp), so a captured signed body
        would be processed again."""
        return self.dedupe_days * 86400 - MAX_CLOCK_AHEAD_SECONDS

    @property
    def api_root(self) -> str:
        return f"{self.api_base_url}/{self.api_version}"

    def missing_for_sending(self) -> list[str]:
        """What must be set before anything can be sent through the Graph API."""
        return [name for name, value in (("WHATSAPP_ACCESS_TOKEN", self.access_token),
                                         ("WHATSAPP_PHONE_NUMBER_ID", self.phone_number_id)) if not value]
