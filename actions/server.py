"""The action server process: rasa-sdk's webhook for our actions, plus the certificate links.

Run with `python -m actions.server`. Listens on ACTION_SERVER_HOST (default 127.0.0.1) and
ACTION_SERVER_PORT (default 5055). Certificate links are served here because this process
already holds the backend; in production a reverse proxy exposes only /certificates/.
"""

from __future__ import annotations

import hmac
import logging
import logging.config
import os
from pathlib import Path

import yaml

from rasa_sdk.endpoint import create_app
from sanic import Sanic, response
from sanic.request import Request

from backend import DatabaseUnavailable

from .backend import call, get_backend

log = logging.getLogger(__name__)

NOT_FOUND = "Tautan tidak ditemukan atau sudah kedaluwarsa. Minta tautan baru lewat chat."


def add_certificate_routes(app: Sanic) -> None:
    @app.get("/certificates/<name:str>")
    async def certificate(request: Request, name: str):
        token = name[:-4] if name.endswith(".pdf") else ""
        backend = get_backend()
        try:
            data = await call(backend.repo.certificate_by_token, token)
            if data is None:
                # Unknown, expired or altered: the same answer, without saying which.
                return response.text(NOT_FOUND, status=404)
            pdf = await call(backend.certificates.get_pdf, data)
        except DatabaseUnavailable:
            return response.text("Layanan sedang gangguan, silakan coba lagi.", status=503)
        return response.raw(pdf, content_type="application/pdf", headers={
            "Content-Disposition": f'inline; filename="sertifikat-vaksin-dosis-{data["dose"]}.pdf"',
            "Cache-Control": "no-store",
        })


# rasa-sdk's own routes that run or list actions; /health and the certificate links stay open.
PROTECTED_PATHS = ("/webhook", "/actions")


def add_token_check(app: Sanic) -> None:
    """Only our Rasa may run actions: it sends `Authorization: Bearer <ACTION_SERVER_TOKEN>`."""

    @app.middleware("request")
    async def require_token(request: Request):
        if request.path not in PROTECTED_PATHS:
            return None
        expected = f"Bearer {get_backend().settings.action_server_token}".encode()
        given = (request.headers.get("authorization") or "").encode()
        if not hmac.compare_digest(given, expected):
            log.warning("refused a call to %s without the right token", request.path)
            return response.json({"error": "unauthorized"}, status=401)
        return None


def build_app() -> Sanic:
    app = create_app("actions", cors_origins=None)
    add_token_check(app)
    add_certificate_routes(app)

    @app.before_server_start
    async def prepare(app, loop):
        backend = get_backend()
        await call(backend.prepare)  # schema and demo data, safe in every replica

    return app


def main() -> None:
    # The same logging as the Rasa process, with the filter that masks personal data.
    config = yaml.safe_load((Path(__file__).resolve().parent.parent / "logging.yml").read_text())
    config["root"]["level"] = os.environ.get("LOG_LEVEL", "INFO")
    logging.config.dictConfig(config)
    host = os.environ.get("ACTION_SERVER_HOST", "127.0.0.1")
    port = int(os.environ.get("ACTION_SERVER_PORT", "5055"))
    # No access log: certificate URLs carry the download token.
    build_app().run(host=host, port=port, access_log=False, workers=1)


if __name__ == "__main__":
    main()
