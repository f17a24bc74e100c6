"""The backend: citizens, vaccinations, certificates, OTP verification, on PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass

from .certificates import CertificateCache
from .db import Database, DatabaseUnavailable, migrate
from .otp import DeliveryWorker, OtpSender, OtpService
from .repository import Repository, utcnow
from .seed import seed_demo
from .settings import Settings, get_settings


@dataclass
class Backend:
    settings: Settings
    db: Database
    repo: Repository
    otp: OtpService
    certificates: CertificateCache

    @classmethod
    def create(cls, settings: Settings | None = None, *, dsn: str | None = None, clock=utcnow,
               otp_sender: OtpSender | None = None) -> "Backend":
        """otp_sender: how codes go out (the action server's, actions/senders.py); without one
        codes are queued and left for the action server to deliver."""
        settings = settings or get_settings()
        dsn = dsn or settings.database_url
        if not dsn:
            raise RuntimeError(
                "DATABASE_URL is not set: start the stack with `make serve` / `make run`, "
                "or set DATABASE_URL to a PostgreSQL server"
            )
        db = Database(dsn, max_connections=settings.db_pool_max,
                      statement_timeout_ms=settings.db_statement_timeout_ms)
        repo = Repository(db, settings, clock)
        return cls(settings, db, repo, OtpService(repo, otp_sender),
                   CertificateCache(signing_key=settings.certificate_signing_key))

    def prepare(self) -> None:
        """Schema up to date and (unless SEED_DEMO_DATA=0) the demo citizens present; safe to
        call from every process."""
        migrate(self.db)
        if self.settings.seed_demo_data:
            seed_demo(self.db)


__all__ = ["Backend", "DatabaseUnavailable", "DeliveryWorker", "OtpSender", "Settings"]
