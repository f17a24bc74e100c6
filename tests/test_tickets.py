"""Complaint tickets, the diagnosis before them, handoffs to an officer, the officers' commands,
and telling the citizen (stored for REST, through the fake Graph API for WhatsApp)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from rasa_sdk.events import ActiveLoop, SlotSet

from actions import backend as action_backend, wording
from actions.support import (ActionAskReportConfirmed, ActionHandoff, ActionOpenTicket, ActionShowTickets,
                             ValidateReportForm, ValidateTicketForm, problem_category)
from backend.officer_desk import Notifier, OfficerDesk
from backend.tickets import Tickets, officers_available
from rasa_server.gate import HANDOFF_ACK, channel_gate
from test_actions import responses, run, tracker

WIB = timezone(timedelta(hours=7))


@pytest.fixture(autouse=True)
def use_test_backend(backend):
    action_backend.set_backend(backend)
    yield
    action_backend.set_backend(None)


def login(backend, outbox, conversation, phone, person: int | None = None):
    backend.otp.request(conversation, phone)
    assert backend.otp.verify(conversation, outbox.last_code(phone)).status == "ok"
    if person is not None:
        backend.repo.choose_person(conversation, backend.repo.people(conversation)[person].id)


class Told:
    """Stands in for the WhatsApp sender in unit tests (the e2e test uses the fake Graph API)."""

    def __init__(self):
        self.messages = []

    def __call__(self, wa_id, text, window_open):
        self.messages.append((wa_id, text, window_open))


def desk(backend, told=None) -> OfficerDesk:
    return OfficerDesk(Tickets(backend.repo, wording.domain()), Notifier(backend.db, backend.repo.clock, told or Told()))


@pytest.mark.parametrize("text, category", [
    ("sertifikat dosis 2 sy blm muncul", "certificate_missing"),
    ("sertif booster saya kok ga keluar2", "certificate_missing"),
    ("nama di sertifikat salah", "wrong_data"),
    ("tanggal vaksin saya keliru", "wrong_data"),
    ("kode otp ga masuk2", "otp_not_received"),
    ("masalah lainnya", "other"),
    ("mau lapor", None),
])
def test_problem_category_from_what_the_citizen_wrote(text, category):
    assert problem_category(text) == category


def test_first_message_is_kept_while_verification_comes_first(outbox):
    tr = tracker("c1", "sertifikat dosis 2 sy blm muncul", intent="report_problem", form="report_form")
    events, messages = run(ValidateReportForm(), tr)
    assert events == [SlotSet("problem_category", "certificate_missing"),
                      SlotSet("problem_description", "sertifikat dosis 2 sy blm muncul"),
                      SlotSet("requested_slot", "phone_number")]


def test_after_verification_a_missing_certificate_goes_straight_to_the_diagnosis(outbox):
    run(ValidateReportForm(), tracker("c1", "081234567005", form="report_form", requested="phone_number"))
    events, messages = run(ValidateReportForm(), tracker(
        "c1", outbox.last_code("+6281234567005"), form="report_form", requested="otp_code",
        slots={"problem_category": "certificate_missing"}))
    assert events[-1] == SlotSet("requested_slot", "report_confirmed")


def test_diagnosis_explains_before_any_ticket(backend, outbox):
    cases = {"+6281234567005": ("utter_diagnosis_processing", None),   # Dewi: dose 2 being processed
             "+6281234567004": ("utter_diagnosis_other_account", None),  # Ni Luh: registered twice
             "+6281234567002": ("utter_diagnosis_all_issued", None)}     # Siti: all issued
    for phone, (expected, _) in cases.items():
        conversation = f"c{phone[-3:]}"
        login(backend, outbox, conversation, phone)
        _, messages = run(ActionAskReportConfirmed(), tracker(
            conversation, form="report_form", slots={"problem_category": "certificate_missing"}))
        assert responses(messages) == [expected, "utter_ask_report_confirmed"], phone
    _, messages = run(ActionAskReportConfirmed(), tracker(
        "c005", form="report_form", slots={"problem_category": "certificate_missing"}))
    assert messages[0]["lines"].startswith("• Dosis 2 (29 Maret 2022),")
    assert "lebih lama dari biasanya" in messages[0]["lines"]


def test_no_record_at_all(backend, outbox):
    def add_person(cur):
        cur.execute("INSERT INTO accounts (phone) VALUES ('+6281300000777') RETURNING id")
        cur.execute("INSERT INTO citizens (account_id, nik, full_name, birth_date) VALUES (%s, %s, %s, %s)",
                    (cur.fetchone()["id"], "3174201501907777", "Warga Baru", "1990-01-15"))

    backend.db.run(add_person)
    login(backend, outbox, "c1", "+6281300000777")
    assert Tickets(backend.repo, wording.domain()).diagnose("c1").kind == "no_record"


def test_ticket_opened_and_followed_only_by_its_account(backend, outbox):
    login(backend, outbox, "c1", "+6281234567005")
    slots = {"problem_category": "certificate_missing", "report_confirmed": "yes",
             "problem_description": "sertifikat dosis 2 sy blm muncul"}
    events, messages = run(ActionOpenTicket(), tracker("c1", form=None, slots=slots))
    assert events == [SlotSet(name, None) for name in ("problem_category", "problem_description", "report_confirmed")]
    assert responses(messages) == ["utter_ticket_opened"]
    assert (messages[0]["reference"], messages[0]["days"]) == ("PL-2026-000001", 3)

    _, messages = run(ActionShowTickets(), tracker("c1", form=None))
    assert "*PL-2026-000001* - Sertifikat belum muncul - diterima" in messages[0]["tickets"]

    desk(backend).resolve("PL-2026-000001", "rina", "Sertifikat dosis 2 sudah terbit, silakan unduh.")
    _, messages = run(ActionShowTickets(), tracker("c1", form=None, slots={"ticket_reference": "PL-2026-000001"}))
    assert "selesai" in messages[0]["tickets"]
    assert "Catatan petugas: Sertifikat dosis 2 sudah terbit" in messages[0]["tickets"]

    login(backend, outbox, "c2", "+6281234567002")  # Siti asks for Dewi's ticket: nothing
    _, messages = run(ActionShowTickets(), tracker("c2", form=None, slots={"ticket_reference": "PL-2026-000001"}))
    assert responses(messages) == ["utter_ticket_not_found"]
    _, messages = run(ActionShowTickets(), tracker("c2", form=None))
    assert responses(messages) == ["utter_no_tickets"]


def test_declined_report_opens_nothing(backend, outbox):
    login(backend, outbox, "c1", "+6281234567002")
    _, messages = run(ActionOpenTicket(), tracker("c1", form=None, slots={
        "problem_category": "wrong_data", "report_confirmed": "no"}))
    assert responses(messages) == ["utter_report_not_sent"]
    assert desk(backend).open_tickets() == []


def test_ticket_reference_in_the_question_is_kept(outbox):
    events, _ = run(ValidateTicketForm(), tracker("c1", "cek tiket pl-2026-000045 dong",
                                                  intent="check_ticket_status", form="ticket_form"))
    assert events[0] == SlotSet("ticket_reference", "PL-2026-000045")


def test_resolving_tells_the_citizen_on_their_channel(backend, outbox, clock):
    told = Told()
    login(backend, outbox, "6281234567002", "+6281234567002")
    tickets = Tickets(backend.repo, wording.domain())
    wa = tickets.open("6281234567002", "wrong_data", "tanggal dosis 2 salah", "whatsapp")
    login(backend, outbox, "web-1", "+6281234567003")
    rest = tickets.open("web-1", "other", "aplikasi error terus", "rest")
    officers = desk(backend, told)
    assert officers.resolve(wa.reference, "rina", "Tanggal sudah diperbaiki.") == "whatsapp_template"
    assert told.messages == [("6281234567002",
                              f"Laporan {wa.reference} (Data vaksinasi salah) sudah selesai ditangani. "
                              "Catatan petugas: Tanggal sudah diperbaiki.", False)]
    assert officers.reject(rest.reference, "rina", "Mohon hubungi 119 ext. 9.") == "stored"
    pending, ack = channel_gate(backend.db, "web-1", "halo", clock)
    assert ack is None and pending == [f"Laporan {rest.reference} (Lainnya) tidak dapat diproses. "
                                       "Catatan petugas: Mohon hubungi 119 ext. 9."]
    assert channel_gate(backend.db, "web-1", "halo", clock) == ([], None)  # shown once
    with pytest.raises(ValueError):
        officers.resolve(rest.reference, "rina", "lagi")  # already closed


def test_handoff_from_request_to_release(backend, outbox, clock):
    tr = tracker("web-2", "mau bicara dengan petugas", intent="request_human", form=None)
    tr.events.extend([{"event": "user", "text": "nik saya 3174011501900001 kok salah"},
                      {"event": "bot", "text": "Maaf, bisa diulang?"}])
    clock.now = datetime(2026, 11, 30, 10, 0, tzinfo=WIB)  # a Monday morning
    events, messages = run(ActionHandoff(), tr)
    assert events == [ActiveLoop(None), SlotSet("requested_slot", None)]  # no menu slot was set
    assert responses(messages) == ["utter_handoff_started"]
    reference = messages[0]["reference"]

    # The citizen's next messages go to the officers, masked, and Rasa does not see them.
    assert channel_gate(backend.db, "web-2", "kode saya 123456, tolong", clock) == ([], HANDOFF_ACK)
    officers = desk(backend)
    shown = officers.show(reference)
    assert shown["live"] is True
    notes = [(n["author"], n["note"]) for n in shown["notes"]]
    assert ("transkrip", "Warga: nik saya 3174********0001 kok salah") in notes
    assert ("warga", "kode saya ******, tolong") in notes
    assert [r["reference"] for r in officers.open_tickets()] == [reference]

    assert officers.reply(reference, "budi", "Halo, saya Budi. NIK Anda akan kami periksa.") == "stored"
    pending, ack = channel_gate(backend.db, "web-2", "terima kasih pak", clock)
    assert pending == ["Petugas: Halo, saya Budi. NIK Anda akan kami periksa."] and ack == HANDOFF_ACK

    officers.release(reference, "budi")
    assert channel_gate(backend.db, "web-2", "menu", clock) == ([wording.text("utter_officer_released")], None)  # the bot again
    assert officers.open_tickets() == []


def test_outside_officer_hours_the_citizen_is_told_when():
    saturday_night = datetime(2026, 12, 5, 21, 0, tzinfo=WIB)
    available, opens = officers_available(saturday_night, "08:00-20:00", "0-5")
    assert not available and opens == datetime(2026, 12, 7, 8, 0, tzinfo=WIB)  # Monday 08:00
    assert officers_available(datetime(2026, 12, 7, 9, 30, tzinfo=WIB))[0] is True
    early = officers_available(datetime(2026, 12, 8, 6, 0, tzinfo=WIB))
    assert early == (False, datetime(2026, 12, 8, 8, 0, tzinfo=WIB))


def test_handoff_outside_hours(backend, clock):
    clock.now = datetime(2026, 12, 6, 9, 0, tzinfo=WIB)  # a Sunday
    _, messages = run(ActionHandoff(), tracker("web-3", "petugas", intent="request_human", form=None))
    assert responses(messages) == ["utter_handoff_outside_hours"]
    assert messages[0]["when"] == "Senin 7 Desember 2026 pukul 08.00 WIB"


def test_whatsapp_notification_through_the_fake_graph_api(backend):
    """Inside the 24-hour window a text message; after it, the notice template."""
    from simulator.fake_graph import FakeGraph
    from whatsapp.notify import send_notification
    from whatsapp.settings import WhatsAppSettings

    with FakeGraph() as graph:
        settings = WhatsAppSettings.from_env(graph.env("secret", "verify"))
        send_notification("6281234567002", "Laporan PL-2026-000001 selesai.", True, settings)
        send_notification("6281234567002", "Laporan PL-2026-000001 selesai.", False, settings)
        sent = graph.wait_for_sent(2, to="6281234567002")
    assert sent[0]["type"] == "text" and sent[0]["text"]["body"] == "Laporan PL-2026-000001 selesai."
    assert sent[1]["type"] == "template" and sent[1]["template"]["name"] == "pembaruan_laporan"
    assert sent[1]["template"]["components"][0]["parameters"][0]["text"] == "Laporan PL-2026-000001 selesai."


def test_the_same_report_sent_again_opens_no_second_ticket(backend, outbox, clock):
    """A confirmation repeated because its answer never came (Rasa killed after the ticket was
    stored: `make chaos` found one) gets the ticket already opened, not a second one."""
    login(backend, outbox, "web-1", "+6281234567003")
    tickets = Tickets(backend.repo, wording.domain())
    first = tickets.open("web-1", "other", "aplikasi error terus", "rest")
    clock.advance(15)
    again = tickets.open("web-1", "other", "aplikasi error terus", "rest")
    other = tickets.open("web-1", "other", "aplikasi error lagi", "rest")
    clock.advance(10 * 60 + 1)
    later = tickets.open("web-1", "other", "aplikasi error terus", "rest")

    def stored(cur):
        cur.execute("SELECT reference FROM tickets WHERE conversation_id = 'web-1' ORDER BY id")
        references = [row["reference"] for row in cur.fetchall()]
        cur.execute("SELECT count(*) AS n FROM audit_log WHERE conversation_id = 'web-1' AND action = 'ticket_opened'")
        return references, cur.fetchone()["n"]

    assert again == first
    assert len({first.reference, other.reference, later.reference}) == 3  # another report; ten minutes on
    assert backend.db.run(stored) == ([first.reference, other.reference, later.reference], 3)
