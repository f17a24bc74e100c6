"""The action server process: rasa-sdk's webhook for our actions, the certificate links, and
the page that verifies a certificate's QR text (/verifikasi).

Run with `python -m actions.server`. Listens on ACTION_SERVER_HOST (default 127.0.0.1) and
ACTION_SERVER_PORT (default 5055). Certificate links are served here because this process
already holds the backend; in production a reverse proxy exposes only /certificates/.
"""

from __future__ import annotations

import hmac
import html
import logging
import logging.config
import os
from pathlib import Path

import orjson
import yaml

from backend.logformat import capture_early

capture_early()  # LOG_FORMAT=json: JSON from the first line (rasa_sdk's imports warn); else nothing

import rasa_sdk.endpoint as sdk_endpoint  # noqa: E402
from sanic import Sanic, response  # noqa: E402
from sanic.exceptions import MethodNotSupported, NotFound  # noqa: E402
from sanic.request import Request  # noqa: E402

from backend import DatabaseUnavailable  # noqa: E402
from backend.certificates import holder_rows  # noqa: E402
from backend.logformat import log_format  # noqa: E402
from backend.signing import MAX_TEXT_LENGTH, VerificationError, verify  # noqa: E402

from . import metrics  # noqa: E402
from .backend import call, get_backend, start_delivery, stop_delivery  # noqa: E402

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


VERIFY_PAGE = """<!doctype html>
<html lang="id">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Verifikasi Sertifikat Vaksin</title>
<style>
body {{ font-family: sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
textarea {{ width: 100%; font-family: monospace; }}
button {{ margin-top: .5rem; padding: .4rem 1.2rem; }}
.asli {{ border-left: 6px solid #007a5e; padding: .2rem 1rem; }}
.ditolak {{ border-left: 6px solid #b00020; padding: .2rem 1rem; }}
th {{ text-align: left; padding-right: 1rem; font-weight: normal; }}
</style>
</head>
<body>
<h1>Verifikasi Sertifikat Vaksinasi COVID-19</h1>
<p>Tempel teks kode QR sertifikat (diawali <code>HC1:</code>), lalu tekan <b>Periksa</b>.
Tanda tangannya diperiksa dengan kunci publik; datanya tidak disimpan.</p>
<form method="post" action="/verifikasi">
<label for="qr">Teks kode QR</label>
<textarea id="qr" name="qr" rows="7" required>{pasted}</textarea>
<button type="submit">Periksa</button>
</form>
{result}
</body>
</html>
"""

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'",
}


def verification_result(pasted: str, public_keys) -> str:
    """The result part of the page; everything that came from outside is escaped."""
    try:
        claims = verify(pasted, public_keys)
    except VerificationError as exc:
        return f'<section class="ditolak"><h2>Ditolak</h2><p>{html.escape(str(exc))}</p></section>'
    rows = "".join(f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
                   for label, value in holder_rows(claims))
    return ('<section class="asli"><h2>Asli</h2><p>Tanda tangan sah. Cocokkan nama dan tanggal '
            f'lahir dengan KTP pemegang sertifikat.</p><table>{rows}</table></section>')


def add_verification_routes(app: Sanic) -> None:
    """A plain form for people without a terminal: the same check as `make verify-certificate`."""

    @app.route("/verifikasi", methods=["GET", "POST"])
    async def verification_page(request: Request):
        result, pasted = "", ""
        if request.method == "POST":
            # Nothing of what was pasted is logged: it is a citizen's name and birth date.
            pasted = (request.form.get("qr") or "") if request.form else ""
            if pasted.strip():
                result = verification_result(pasted, get_backend().settings.certificate_public_keys)
            else:
                result = '<section class="ditolak"><p>Tempel teks kode QR terlebih dahulu.</p></section>'
        page = VERIFY_PAGE.format(pasted=html.escape(pasted[:MAX_TEXT_LENGTH]), result=result)
        return response.html(page, headers=PAGE_HEADERS)


# The only routes served without the token, by the handler's name: everything else (rasa-sdk's
# /webhook and /actions, and any route added later) needs it. Checked against the route Sanic
# matched, so every spelling of a path that reaches a handler (/webhook/, /webhook//) is covered.
PUBLIC_ROUTES = frozenset({"health", "certificate", "verification_page"})


def add_token_check(app: Sanic) -> None:
    """Only our Rasa may run actions: it sends `Authorization: Bearer <ACTION_SERVER_TOKEN>`."""
    public = frozenset(f"{app.name}.{name}" for name in PUBLIC_ROUTES)

    @app.middleware("request")
    async def require_token(request: Request):
        route = getattr(request, "route", None)
        if route is not None and route.name in public:
            return None
        expected = f"Bearer {get_backend().settings.action_server_token}".encode()
        given = (request.headers.get("authorization") or "").encode()
        if not hmac.compare_digest(given, expected):
            # The route's name, not the path: the path is whatever the caller wrote.
            log.warning("refused a call to %s without the right token",
                        route.name if route is not None else "an unknown route")
            return response.json({"error": "unauthorized"}, status=401)
        return None

    # A request that matches no route still passes the check above (401 without the token);
    # with it, these answer 404/405 where rasa-sdk's catch-all answered 500 echoing the body.
    @app.exception(NotFound)
    async def not_found(request: Request, exception: Exception):
        return response.json({"error": "not found"}, status=404)

    @app.exception(MethodNotSupported)
    async def method_not_allowed(request: Request, exception: Exception):
        return response.json({"error": "method not allowed"}, status=405)


def create_app_without_cors() -> Sanic:
    """rasa-sdk's app, without the CORS extension its create_app always installs: only Rasa calls
    this server, never a browser, and even `cors_origins=None` answered preflights with
    Access-Control-* headers."""
    configure_cors = sdk_endpoint.configure_cors
    sdk_endpoint.configure_cors = lambda app, cors_origins=None: None
    try:
        return sdk_endpoint.create_app("actions", cors_origins=None)
    finally:
        sdk_endpoint.configure_cors = configure_cors


class FastJSONRequest(Request):
    """Every call from Rasa carries the whole conversation (tens of kB); Sanic reads it with
    ujson, which took a quarter of this process's time per call at 16 users. orjson reads the
    same JSON to the same values in about half the time."""

    def load_json(self, loads=orjson.loads):
        return super().load_json(loads)


def build_app() -> Sanic:
    app = create_app_without_cors()
    app.request_class = FastJSONRequest
    add_token_check(app)
    add_certificate_routes(app)
    add_verification_routes(app)

    @app.before_server_start
    async def prepare(app, loop):
        backend = get_backend()
        await call(backend.prepare)  # schema and demo data, safe in every replica

    @app.after_server_start
    async def start_otp_delivery(app, loop):
        start_delivery()  # codes are sent from a queue, never within a citizen's turn

    @app.before_server_stop
    async def stop_otp_delivery(app, loop):
        await loop.run_in_executor(None, stop_delivery)

    return app


def main() -> None:
    # The same logging as the Rasa process (LOG_FORMAT, the filter that masks personal data).
    try:
        log_format(os.environ)
    except ValueError as error:
        raise SystemExit(f"actions.server: {error}")
    config = yaml.safe_load((Path(__file__).resolve().parent.parent / "logging.yml").read_text())
    config["root"]["level"] = os.environ.get("LOG_LEVEL", "INFO")
    logging.config.dictConfig(config)
    metrics.install()
    metrics.serve()
    host = os.environ.get("ACTION_SERVER_HOST", "127.0.0.1")
    port = int(os.environ.get("ACTION_SERVER_PORT", "5055"))
    # No access log: certificate URLs carry the download token.
    build_app().run(host=host, port=port, access_log=False, workers=1)


if __name__ == "__main__":
    main()
