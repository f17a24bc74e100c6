"""The OTP rules of shared/product.md, against the real PostgreSQL."""

import pytest

from backend import Settings
from conftest import assembled
from backend.otp import CHANGE_PHONE, LOGIN

BUDI = "+6281234567001"
UNKNOWN = "+6281299999999"


def test_code_is_sent_and_opens_a_session(backend, outbox):
    issued = backend.otp.request("c1", BUDI)
    assert (issued.status, issued.masked_phone) == ("sent", "0812****7001")
    code = outbox.last_code(BUDI)
    assert backend.repo.session_state("c1") == "none"
    assert backend.otp.verify("c1", code).status == "ok"
    assert backend.repo.session_state("c1") == "choose_person"  # Budi's account holds two people


def test_code_is_stored_only_as_a_keyed_hash(backend, outbox):
    backend.otp.request("c1", BUDI)
    code = outbox.last_code(BUDI)
    row = backend.db.run(lambda cur: (cur.execute("SELECT * FROM otp_challenges"), cur.fetchone())[1])
    stored = " ".join(str(value) for value in row.values())
    assert code not in stored and code.encode() not in bytes(row["code_hash"])
    assert len(bytes(row["code_hash"])) == 32


def test_single_use(backend, outbox):
    backend.otp.request("c1", BUDI)
    code = outbox.last_code(BUDI)
    assert backend.otp.verify("c1", code).status == "ok"
    assert backend.otp.verify("c1", code).status == "none"


def test_expires_after_ttl(backend, outbox, clock):
    backend.otp.request("c1", BUDI)
    code = outbox.last_code(BUDI)
    clock.advance(300)
    assert backend.otp.verify("c1", code).status == "expired"


def test_five_wrong_tries_void_the_code(backend, outbox):
    backend.otp.request("c1", BUDI)
    code = outbox.last_code(BUDI)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    results = [backend.otp.verify("c1", wrong) for _ in range(5)]
    assert [r.status for r in results] == ["wrong"] * 4 + ["void"]
    assert [r.attempts_left for r in results[:4]] == [4, 3, 2, 1]
    assert backend.otp.verify("c1", code).status == "void"  # even the right code, now


def test_resend_waits_60_seconds_and_voids_the_old_code(backend, outbox, clock):
    backend.otp.request("c1", BUDI)
    first = outbox.last_code(BUDI)
    clock.advance(59)
    too_soon = backend.otp.request("c1", BUDI)
    assert (too_soon.status, too_soon.retry_after) == ("too_soon", 1)
    clock.advance(1)
    assert backend.otp.request("c1", BUDI).status == "sent"
    second = outbox.last_code(BUDI)
    if first != second:
        assert backend.otp.verify("c1", first).status == "wrong"
    assert backend.otp.verify("c1", second).status == "ok"


def test_at_most_five_codes_per_phone_per_hour(backend, clock):
    statuses = []
    for i in range(6):
        statuses.append(backend.otp.request(f"conv-{i}", BUDI).status)
        clock.advance(61)
    assert statuses == ["sent"] * 5 + ["rate_limited"]
    limited = backend.otp.request("conv-x", BUDI)
    assert limited.status == "rate_limited" and 0 < limited.retry_after <= 3600
    clock.advance(3600)
    assert backend.otp.request("conv-y", BUDI).status == "sent"


def test_at_most_five_codes_per_conversation_per_hour(backend, clock):
    phones = [f"+62812345670{n:02d}" for n in range(10, 16)]
    statuses = [backend.otp.request("one-conversation", phone).status for phone in phones]
    assert statuses == ["sent"] * 5 + ["rate_limited"]


def test_global_ceiling_per_minute(backend, database_url, settings_env, clock):
    backend = assembled(Settings.from_env({**settings_env, "OTP_MAX_SENDS_PER_MINUTE": "3"}),
                             dsn=database_url, clock=clock)
    statuses = [backend.otp.request(f"c{i}", f"+62812345671{i:02d}").status for i in range(4)]
    assert statuses == ["sent", "sent", "sent", "busy"]
    backend.db.close()


def test_unregistered_number_gets_the_same_reply_and_nothing_is_sent(backend, outbox, clock):
    known = backend.otp.request("c1", BUDI)
    unknown = backend.otp.request("c2", UNKNOWN)
    assert (known.status, unknown.status) == ("sent", "sent")
    assert outbox.messages(UNKNOWN) == []
    # Every code fails the same way as a wrong code for a registered number...
    assert backend.otp.verify("c2", "123456").status == "wrong"
    # ...and the same limits apply.
    assert backend.otp.request("c2", UNKNOWN).status == "too_soon"


def test_limits_come_from_the_environment(backend, database_url, settings_env, clock, outbox):
    env = {**settings_env, "OTP_TTL_SECONDS": "30", "OTP_MAX_ATTEMPTS": "2", "OTP_RESEND_SECONDS": "5"}
    backend = assembled(Settings.from_env(env), dsn=database_url, clock=clock)
    backend.otp.request("c1", BUDI)
    assert [backend.otp.verify("c1", "000000").status for _ in range(2)][-1] in ("void", "ok")
    clock.advance(5)
    assert backend.otp.request("c1", BUDI).status == "sent"
    code = outbox.last_code(BUDI)  # delivered before it expires
    clock.advance(30)
    assert backend.otp.verify("c1", code).status == "expired"
    backend.db.close()


def test_change_phone_code_runs_the_change_in_the_same_transaction(backend, outbox):
    backend.otp.request("c1", "+6281234567002")
    backend.otp.verify("c1", outbox.last_code("+6281234567002"))
    new = "+6281298765432"
    assert backend.otp.request("c1", new, CHANGE_PHONE).status == "sent"

    def fail(cur, phone):
        cur.execute("UPDATE accounts SET phone = %s WHERE phone = %s", (phone, "+6281234567002"))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        backend.otp.verify("c1", outbox.last_code(new), CHANGE_PHONE, fail)
    # Rolled back whole: the number did not change and the code was not used up.
    assert backend.repo.account_phone("c1") == "+6281234567002"
    applied = backend.otp.verify("c1", outbox.last_code(new), CHANGE_PHONE,
                                 lambda cur, phone: backend.repo.change_phone(cur, "c1", phone))
    assert applied.status == "ok"
    assert backend.repo.account_phone("c1") == new


def test_login_codes_and_change_codes_do_not_mix(backend, outbox):
    backend.otp.request("c1", BUDI)
    code = outbox.last_code(BUDI)
    assert backend.otp.verify("c1", code, CHANGE_PHONE).status == "none"
    assert backend.otp.verify("c2", code, LOGIN).status == "none"  # another conversation
    assert backend.otp.verify("c1", code, LOGIN).status == "ok"


def test_ten_thousand_guesses_across_resends_open_nothing(backend, outbox, clock):
    """A script sending 10,000 guesses, one a second, asking for a new code whenever one dies.

    Only guesses against a live code are even checked: 5 a code, 5 codes an hour. The script
    never guesses the real code (read from the outbox) so the test is deterministic; the
    figure that matters is how few guesses were checked at all (each is a 1 in 10^6 chance).
    """
    checked = opened = 0
    backend.otp.request("attacker", BUDI)
    live = outbox.last_code(BUDI)
    for guess in range(10_000):
        attempt = f"{guess:06d}"
        if attempt == live:
            attempt = f"{(guess + 1) % 1_000_000:06d}"
        result = backend.otp.verify("attacker", attempt)
        if result.status in ("wrong", "void") and result.attempts_left >= 0:
            checked += result.status == "wrong" or result.attempts_left == 0
        opened += result.status == "ok"
        if result.status in ("void", "expired", "none"):
            if backend.otp.request("attacker", BUDI).status == "sent":
                live = outbox.last_code(BUDI)
        clock.advance(1)
    hours = 10_000 / 3600
    assert opened == 0
    assert backend.repo.session_state("attacker") == "none"
    sends = len(outbox.messages(BUDI))
    assert sends <= 5 * (int(hours) + 1)
    attempts = backend.db.run(lambda cur: (cur.execute(
        "SELECT sum(attempts) AS n FROM otp_challenges WHERE conversation_id = 'attacker'"), cur.fetchone())[1])
    assert attempts["n"] <= 5 * sends <= 75


def test_http_sms_gateway_sender(backend, database_url, settings_env, clock):
    """The production sender against a local server speaking the gateway's protocol."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received = []

    class Gateway(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers["Authorization"], json.loads(body)))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**settings_env, "OTP_SENDER": "http", "SMS_GATEWAY_TOKEN": "t0ken",
           "SMS_GATEWAY_URL": f"http://127.0.0.1:{server.server_port}/send"}
    sms = assembled(Settings.from_env(env), dsn=database_url, clock=clock)
    try:
        assert sms.otp.request("c1", BUDI).status == "sent"
        assert sms.otp.request("c2", UNKNOWN).status == "sent"
        sms.otp.drain()  # delivery comes after the reply, from the queue
    finally:
        server.shutdown()
        sms.db.close()
    assert len(received) == 1
    auth, body = received[0]
    assert auth == "Bearer t0ken" and body["to"] == BUDI
    code = body["text"].split(": ")[1][:6]
    assert sms.otp.verify("c1", code).status == "ok"


def test_a_failing_gateway_is_not_revealed(backend, database_url, settings_env, clock, caplog):
    env = {**settings_env, "OTP_SENDER": "http", "SMS_GATEWAY_URL": "http://127.0.0.1:9/send"}
    sms = assembled(Settings.from_env(env), dsn=database_url, clock=clock)
    assert sms.otp.request("c1", BUDI).status == "sent"  # same reply; the citizen can resend
    sms.otp.drain()
    assert "0812****7001" in caplog.text and "81234567001" not in caplog.text
    sms.db.close()
