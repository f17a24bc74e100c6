"""OTP findings of the security review: the phone change tells nobody which numbers are
registered; codes are delivered from a queue after the reply (no timing oracle, nothing lost to
a slow or failing gateway); the development outbox is the owner's only from its first byte."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from statistics import median

import pytest
from rasa_sdk import Tracker

from actions import backend as action_backend
from actions.actions import ActionApplyPersonalInfo
from actions.forms import ActionAskChangeConfirmed, ValidateCertificateForm, ValidateChangeInfoForm
from backend import Backend, Settings
from actions.senders import OutboxSender
from backend.otp import CHANGE_PHONE
from backend.repository import utcnow
from backend.retention import purge
from conftest import ROOT, assembled
from test_actions import responses, run
from test_actions import tracker as actions_tracker

NI_LUH = "+6281234567004"
SITI = "+6281234567002"  # another account's number
FREE = "+6281300000000"


def tracker(sender: str, text: str = "", **kwargs) -> Tracker:
    """test_actions' tracker, inside the change form by default."""
    return actions_tracker(sender, text, **{"form": "change_info_form", **kwargs})


@pytest.fixture
def actions_on(backend):
    action_backend.set_backend(backend)
    yield backend
    action_backend.set_backend(None)


def login(conversation: str, phone: str, outbox, form=ValidateChangeInfoForm):
    run(form(), tracker(conversation, "0" + phone[3:], requested="phone_number"))
    events, messages = run(form(), tracker(conversation, outbox.last_code(phone), requested="otp_code",
                                           slots={"phone_number": phone}))
    assert responses(messages)[0] == "utter_verified"


def ask_for_number(conversation: str, typed: str, e164: str) -> list:
    """Ubah Info Diri -> nomor HP -> the number -> the confirmation -> "ya": every event and
    message the citizen's turns produce, up to and including the code prompt."""
    form = ValidateChangeInfoForm()
    slots = {"info_field": "phone"}
    turns = [run(form, tracker(conversation, typed, requested="new_value", slots=slots))]
    slots["new_value"] = e164
    turns.append(run(ActionAskChangeConfirmed(), tracker(conversation, typed, slots=slots)))
    turns.append(run(form, tracker(conversation, "ya", intent="affirm", requested="change_confirmed", slots=slots)))
    return turns


def without_number(turns, e164: str) -> str:
    """The turns as text, with every spelling of the number replaced by one placeholder."""
    national = "0" + e164[3:]
    spellings = [e164, f"{national[:4]}-{national[4:8]}-{national[8:]}", f"{national[:4]}****{national[-4:]}",
                 "0" + e164[3:]]
    text = repr(turns)
    for spelling in spellings:
        text = text.replace(spelling, "<NUMBER>")
    return text


def snapshot(backend) -> tuple:
    def fn(cur):
        cur.execute("SELECT id, phone, updated_at FROM accounts ORDER BY id")
        accounts = cur.fetchall()
        cur.execute("SELECT action, detail FROM audit_log ORDER BY id")
        return accounts, cur.fetchall()

    return backend.db.run(fn)


# --- 3: Ubah Info Diri -> nomor HP tells nobody which numbers are registered -------------------


def test_another_accounts_number_and_a_free_one_get_the_same_replies_until_the_code(actions_on, outbox, clock):
    backend = actions_on
    login("c-taken", NI_LUH, outbox)
    clock.advance(61)  # the same citizen again, in a second conversation
    login("c-free", NI_LUH, outbox)
    before = snapshot(backend)

    taken = ask_for_number("c-taken", "0812-3456-7002", SITI)
    free = ask_for_number("c-free", "0813-0000-0000", FREE)
    assert responses(taken[-1][1]) == ["utter_new_phone_otp_sent"]
    assert without_number(taken, SITI) == without_number(free, FREE)  # texts and events alike

    # A code went to each number: holding it is the proof.
    [to_taken] = outbox.messages(SITI)
    [to_free] = outbox.messages(FREE)
    assert "menjadikan nomor ini nomor HP akun" in to_taken["text"] and "menjadikan" in to_free["text"]

    # A wrong code: the same answer for both too.
    form = ValidateChangeInfoForm()
    slots = {"info_field": "phone", "change_confirmed": "yes"}
    wrong = {}
    for conversation, number in (("c-taken", SITI), ("c-free", FREE)):
        code = outbox.last_code(number)
        guess = f"{(int(code) + 1) % 1_000_000:06d}"
        wrong[conversation] = run(form, tracker(conversation, guess, requested="new_phone_otp",
                                                slots={**slots, "new_value": number}))
    assert wrong["c-taken"] == wrong["c-free"]
    assert responses(wrong["c-taken"][1]) == ["utter_otp_wrong"]

    # Only after the right code does the taken number get the refusal; nothing changed.
    events, messages = run(form, tracker("c-taken", outbox.last_code(SITI), requested="new_phone_otp",
                                         slots={**slots, "new_value": SITI}))
    assert responses(messages) == ["utter_phone_unavailable"]
    assert {"new_value": None, "change_confirmed": None, "new_phone_otp": None}.items() <= \
        {e["name"]: e["value"] for e in events if e["event"] == "slot"}.items()
    assert snapshot(backend) == before
    assert backend.repo.account_phone("c-taken") == NI_LUH
    # The code is used up: typing it again opens nothing.
    again = backend.otp.verify("c-taken", outbox.last_code(SITI), CHANGE_PHONE,
                               lambda cur, phone: backend.repo.change_phone(cur, "c-taken", phone))
    assert again.status == "none"

    # The free number, with its right code, is switched to.
    events, _ = run(form, tracker("c-free", outbox.last_code(FREE), requested="new_phone_otp",
                                  slots={**slots, "new_value": FREE}))
    assert {"event": "slot", "name": "new_phone_otp", "value": "verified", "timestamp": None} in events
    assert backend.repo.account_phone("c-free") == FREE
    _, messages = run(ActionApplyPersonalInfo(), tracker("c-free", form=None,
                                                         slots={**slots, "new_value": FREE, "new_phone_otp": "verified"}))
    assert responses(messages) == ["utter_changed_phone"]


def test_new_numbers_are_rate_limited_per_conversation_like_the_login(actions_on, outbox):
    login("c1", NI_LUH, outbox)
    numbers = [f"+628130000000{n}" for n in range(6)]
    replies, received = [], []
    for number in numbers:
        replies.append(responses(ask_for_number("c1", "0" + number[3:], number)[-1][1]))
        received.append(len(outbox.messages(number)))  # delivered before the next is asked for
    assert replies == [["utter_new_phone_otp_sent"]] * 5 + [["utter_otp_rate_limited"]]
    assert received == [1] * 5 + [0]


def test_one_number_gets_at_most_five_change_codes_an_hour_across_conversations(actions_on, outbox, clock):
    owners = [f"+62812345670{n:02d}" for n in (1, 2, 3, 4, 5, 6)]
    for n, owner in enumerate(owners):
        login(f"c{n}", owner, outbox)
    actions_on.repo.choose_person("c0", actions_on.repo.people("c0")[0].id)  # 7001 is a family
    replies, received = [], []
    for n in range(6):
        replies.append(responses(ask_for_number(f"c{n}", "0813-0000-0000", FREE)[-1][1]))
        received.append(len(outbox.messages(FREE)))  # delivered before the clock moves on
        clock.advance(61)  # past the resend wait for the number
    assert replies == [["utter_new_phone_otp_sent"]] * 5 + [["utter_otp_rate_limited"]]
    assert received == [1, 2, 3, 4, 5, 5]


# --- 5: delivery from a queue, after the reply ---------------------------------------------------


class FakeSmsGateway:
    """An SMS gateway on loopback speaking HttpSmsSender's protocol (POST JSON {to, text},
    bearer token), answering after `delay` seconds, with 503 for the first `failures` calls."""

    def __init__(self, delay: float = 0.0, failures: int = 0):
        self.delay, self.failures = delay, failures
        self.calls: list[tuple[int, dict]] = []
        self.lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(gateway.delay)
                with gateway.lock:
                    status = 503 if gateway.failures > 0 else 202
                    gateway.failures -= status == 503
                    gateway.calls.append((status, body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/send"

    def delivered(self) -> list[dict]:
        with self.lock:
            return [body for status, body in self.calls if status == 202]

    def wait_for(self, count: int, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.delivered()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.delivered()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sms_backend(backend, database_url, settings_env):  # `backend` resets the demo data
    """A backend on the real clock whose sender is the http one, with its delivery worker
    started the way the action server starts it; the gateway is set by the test."""
    made = []

    def make(gateway: FakeSmsGateway) -> Backend:
        env = {**settings_env, "OTP_SENDER": "http", "SMS_GATEWAY_URL": gateway.url,
               "SMS_GATEWAY_TOKEN": "t0ken", "OTP_DELIVERY_RETRY_SECONDS": "0.1"}
        sms = assembled(Settings.from_env(env), dsn=database_url, clock=utcnow)
        action_backend.set_backend(sms)
        action_backend.start_delivery()
        made.append(sms)
        return sms

    yield make
    action_backend.stop_delivery()
    action_backend.set_backend(None)
    for sms in made:
        sms.db.close()


def timed_phone_turn(conversation: str, typed: str) -> tuple[float, list[str]]:
    started = time.perf_counter()
    _, messages = run(ValidateCertificateForm(), tracker(conversation, typed, form="certificate_form",
                                                         requested="phone_number"))
    return time.perf_counter() - started, responses(messages)


def queued(backend) -> int:
    return backend.db.run(lambda cur: (cur.execute("SELECT count(*) AS n FROM otp_deliveries"),
                                       cur.fetchone()["n"])[1])


def test_registered_and_unknown_numbers_are_answered_alike_before_a_slow_gateway(sms_backend):
    gateway = FakeSmsGateway(delay=0.5)
    try:
        sms = sms_backend(gateway)
        timed_phone_turn("warm-up", "0812 9999 0009")  # first connections, first imports
        registered, unknown = [], []
        for n in range(1, 6):  # alternating, each to its own number (no resend wait)
            took, said = timed_phone_turn(f"r{n}", f"0812-3456-700{n}")
            assert said == ["utter_otp_sent"]
            registered.append(took)
            took, said = timed_phone_turn(f"u{n}", f"0812-9999-000{n}")
            assert said == ["utter_otp_sent"]
            unknown.append(took)
        print(f"reply ms: registered median {median(registered) * 1000:.1f} max {max(registered) * 1000:.1f};"
              f" unknown median {median(unknown) * 1000:.1f} max {max(unknown) * 1000:.1f}")
        assert max(registered) < 0.25 and max(unknown) < 0.25  # well under the gateway's 500 ms
        assert abs(median(registered) - median(unknown)) < 0.05

        delivered = gateway.wait_for(5)
        time.sleep(0.3)  # nothing more arrives
        assert sorted(body["to"] for body in gateway.delivered()) == [f"+62812345670{n:02d}" for n in range(1, 6)]
        assert queued(sms) == 0
        code = next(b for b in delivered if b["to"] == "+6281234567002")["text"].split(": ")[1][:6]
        assert sms.otp.verify("r2", code).status == "ok"
    finally:
        gateway.close()


def test_a_gateway_failing_twice_still_delivers_the_code_once(sms_backend, caplog):
    gateway = FakeSmsGateway(failures=2)
    try:
        sms = sms_backend(gateway)
        took, said = timed_phone_turn("c1", "0812-3456-7002")
        assert said == ["utter_otp_sent"] and took < 0.25
        [delivered] = gateway.wait_for(1)
        time.sleep(0.5)  # no second copy
        assert [status for status, _ in gateway.calls] == [503, 503, 202]
        assert len({body["text"] for _, body in gateway.calls}) == 1  # the same code each time
        assert queued(sms) == 0
        code = delivered["text"].split(": ")[1][:6]
        assert sms.otp.verify("c1", code).status == "ok"
        assert "OTP delivery to 0812****7002 failed: HTTPError (attempt 2" in caplog.text
        assert "81234567002" not in caplog.text and code not in caplog.text
    finally:
        gateway.close()


def test_stopping_the_worker_lets_a_send_in_progress_end(sms_backend):
    gateway = FakeSmsGateway(delay=0.5)
    try:
        sms = sms_backend(gateway)
        sms.otp.request("c1", SITI)
        deadline = time.monotonic() + 5
        while not queued(sms) or sms.db.run(lambda cur: (cur.execute(
                "SELECT attempts FROM otp_deliveries"), cur.fetchone())[1])["attempts"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)  # until a worker thread has claimed it
        worker = action_backend._worker
        action_backend.stop_delivery()
        assert not any(t.is_alive() for t in worker._threads)
        assert [body["to"] for body in gateway.delivered()] == [SITI] and queued(sms) == 0
    finally:
        gateway.close()


def test_the_queue_holds_the_code_only_sealed_and_bound_to_its_number(backend, outbox, caplog):
    backend.otp.request("c1", SITI)
    row = backend.db.run(lambda cur: (cur.execute("SELECT * FROM otp_deliveries"), cur.fetchone())[1])
    code = outbox.last_code(SITI)  # delivered now
    stored = " ".join(str(value) for value in row.values())
    assert code not in stored and code.encode() not in bytes(row["sealed_code"])
    assert queued(backend) == 0

    # Moved to another number in the database, the sealed code no longer opens: nothing is sent.
    backend.otp.request("c2", "+6281234567003")
    backend.db.run(lambda cur: cur.execute("UPDATE otp_deliveries SET phone = %s", (FREE,)))
    backend.otp.drain()
    assert outbox.messages(FREE) == [] and outbox.messages("+6281234567003") == []
    assert queued(backend) == 0 and "OTP delivery to 0813****0000 dropped" in caplog.text


def test_undelivered_codes_go_when_they_expire(backend, database_url, settings_env, clock, caplog):
    env = {**settings_env, "OTP_SENDER": "http", "SMS_GATEWAY_URL": "http://127.0.0.1:9/send"}
    sms = assembled(Settings.from_env(env), dsn=database_url, clock=clock)
    try:
        sms.otp.request("c1", SITI)
        assert sms.otp.drain() == 1 and queued(sms) == 1  # failed, kept for another try
        clock.advance(1)
        assert sms.otp.drain() == 1 and queued(sms) == 1  # again (1 s, then 2 s, ...)
        clock.advance(300)
        assert sms.otp.drain() == 0 and queued(sms) == 0  # the code expired: dropped unsent
        assert "OTP delivery to 0812****7002 given up: the code expired after 2 attempt(s)" in caplog.text

        # Leftovers of a time no action server ran are purged by the retention job.
        sms.otp.request("c2", "+6281234567003")
        clock.advance(301)
        assert purge(sms.db, 30, now=clock())["otp_deliveries"] == 1 and queued(sms) == 0
    finally:
        sms.db.close()


# --- 6b: the development outbox -----------------------------------------------------------------


def test_the_outbox_file_is_created_owner_only_even_with_umask_0(tmp_path, clock):
    path = tmp_path / "outbox.jsonl"
    old = os.umask(0)
    try:
        OutboxSender(path, clock).send(SITI, "123456", ttl_seconds=300, purpose=CHANGE_PHONE)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["to"] == SITI
