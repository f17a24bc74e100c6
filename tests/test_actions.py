"""The actions through rasa_sdk's Tracker and CollectingDispatcher, with the exact events they
return and the responses they send, against the real backend."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from rasa_sdk import Tracker
from rasa_sdk.events import ActiveLoop, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions import backend as action_backend
from actions.actions import (ActionApplyPersonalInfo, ActionAskAffirmation, ActionCancel, ActionEndSession,
                             ActionSendCertificate, ActionShowStatus)
from actions.forms import ActionAskDose, ActionAskPerson, ValidateCertificateForm, ValidateChangeInfoForm, ValidateStatusForm
from actions.verified_form import reset_flow_events
from backend import Settings
from conftest import assembled

DOMAIN = yaml.safe_load((Path(__file__).resolve().parent.parent / "domain.yml").read_text())
RESET = [SlotSet(name, None) for name in ["phone_number", "otp_code", "person", "dose", "info_field",
                                          "new_value", "change_confirmed", "new_phone_otp",
                                          "problem_category", "problem_description", "report_confirmed",
                                          "ticket_reference"]] + [SlotSet("form_errors", 0)]


@pytest.fixture(autouse=True)
def use_test_backend(backend):
    action_backend.set_backend(backend)
    yield
    action_backend.set_backend(None)


def tracker(sender: str, text: str = "", *, intent: str = "inform", form: str | None = "certificate_form",
            requested: str | None = None, slots: dict | None = None) -> Tracker:
    """A tracker as Rasa sends it right after the user said `text` inside `form`."""
    slots = {"form_errors": 0, **(slots or {})}
    events = [{"event": "user", "text": text, "parse_data": {"intent": {"name": intent}}}]
    if requested:
        slots.update({"requested_slot": requested, requested: text})
        events.append({"event": "slot", "name": requested, "value": text})
    return Tracker(sender, slots, {"text": text, "intent": {"name": intent, "confidence": 0.99},
                                   "entities": [], "intent_ranking": [{"name": intent, "confidence": 0.99}]},
                   events, False, None, {"name": form} if form else {}, "action_listen")


def run(action, tr: Tracker):
    dispatcher = CollectingDispatcher()
    events = asyncio.run(action.run(dispatcher, tr, DOMAIN))
    return events, dispatcher.messages


def responses(messages) -> list[str]:
    return [m["response"] for m in messages]


def verify(sender: str, phone_typed: str, outbox, form=ValidateCertificateForm, phone="+6281234567001"):
    events, messages = run(form(), tracker(sender, phone_typed, requested="phone_number"))
    code = outbox.last_code(phone)
    return events, messages, run(form(), tracker(sender, code, requested="otp_code", slots={"phone_number": phone}))


def test_phone_number_sends_a_code_and_asks_for_it(outbox):
    events, messages = run(ValidateCertificateForm(), tracker("c1", "0812-3456-7001", requested="phone_number"))
    assert events == [SlotSet("phone_number", "+6281234567001"), SlotSet("otp_code", None),
                      SlotSet("form_errors", 0), SlotSet("requested_slot", "otp_code")]
    assert messages[0]["response"] == "utter_otp_sent"
    assert (messages[0]["masked_phone"], messages[0]["minutes"]) == ("0812****7001", 5)
    assert len(outbox.messages("+6281234567001")) == 1


def test_unknown_number_gets_the_same_reply(outbox):
    events, messages = run(ValidateCertificateForm(), tracker("c1", "0812 9999 0000", requested="phone_number"))
    assert events[-1] == SlotSet("requested_slot", "otp_code")
    assert responses(messages) == ["utter_otp_sent"]
    assert outbox.messages() == []


def test_wrong_formats_give_a_hint_then_end_the_form_at_the_third():
    form = ValidateCertificateForm()
    events, messages = run(form, tracker("c1", "halo kak", requested="phone_number"))
    assert events == [SlotSet("phone_number", None), SlotSet("form_errors", 1),
                      SlotSet("requested_slot", "phone_number")]
    assert responses(messages) == ["utter_invalid_phone"]
    events, messages = run(form, tracker("c1", "+65 8123 4567", requested="phone_number", slots={"form_errors": 1}))
    assert responses(messages) == ["utter_invalid_phone_foreign"]
    assert SlotSet("form_errors", 2) in events
    events, messages = run(form, tracker("c1", "021-1234567", requested="phone_number", slots={"form_errors": 2}))
    assert events == RESET + [SlotSet("requested_slot", None)]
    assert responses(messages) == ["utter_too_many_errors"]


def test_right_code_for_a_family_asks_which_person(outbox):
    _, _, (events, messages) = verify("c1", "081234567001", outbox)
    assert events == [SlotSet("otp_code", None), SlotSet("phone_number", None), SlotSet("person", None),
                      SlotSet("form_errors", 0), SlotSet("requested_slot", "person")]
    assert responses(messages) == ["utter_verified"]
    events, messages = run(ActionAskPerson(), tracker("c1", form="certificate_form"))
    assert messages[0]["people"] == "1. Budi Santoso (NIK 3174********0001)\n2. Rina Santoso (NIK 3174********0002)"
    assert [b["payload"] for b in messages[0]["buttons"]] == ["1", "2"]


@pytest.mark.parametrize("answer", ["2", "Rina", "yang rina santoso", "3174014203100002", "3174 0142 0310 0002"])
def test_person_by_number_name_or_nik(outbox, answer):
    verify("c1", "081234567001", outbox)
    events, messages = run(ValidateCertificateForm(), tracker("c1", answer, requested="person"))
    assert events == [SlotSet("person", "Rina Santoso"), SlotSet("form_errors", 0),
                      SlotSet("requested_slot", "dose")]
    assert responses(messages) == ["utter_person_chosen"]
    assert messages[0]["masked_nik"] == "3174********0002"


def test_single_person_account_goes_straight_to_the_dose(outbox):
    _, _, (events, messages) = verify("c1", "081234567002", outbox, phone="+6281234567002")
    assert events[-1] == SlotSet("requested_slot", "dose")
    assert responses(messages) == ["utter_verified", "utter_person_chosen"]
    _, messages = run(ActionAskDose(), tracker("c1"))
    assert [b["payload"] for b in messages[0]["buttons"]] == ["1", "2"]


def test_wrong_code_is_counted_server_side_not_as_a_format_error(outbox):
    run(ValidateStatusForm(), tracker("c1", "081234567002", form="status_form", requested="phone_number"))
    code = outbox.last_code("+6281234567002")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    events, messages = run(ValidateStatusForm(), tracker("c1", wrong, form="status_form", requested="otp_code",
                                                         slots={"phone_number": "+6281234567002"}))
    assert events == [SlotSet("otp_code", None), SlotSet("form_errors", 0), SlotSet("requested_slot", "otp_code")]
    assert responses(messages) == ["utter_otp_wrong"] and messages[0]["attempts_left"] == 4


def test_resend_inside_the_form(outbox, clock):
    run(ValidateStatusForm(), tracker("c1", "081234567002", form="status_form", requested="phone_number"))
    assert len(outbox.messages("+6281234567002")) == 1  # delivered (a void code's delivery is dropped)
    events, messages = run(ValidateStatusForm(), tracker("c1", "kode blm masuk, kirim ulang", intent="resend_otp",
                                                         form="status_form", requested="otp_code"))
    assert responses(messages) == ["utter_otp_too_soon"]
    clock.advance(60)
    events, messages = run(ValidateStatusForm(), tracker("c1", "kirim ulang", intent="resend_otp",
                                                         form="status_form", requested="otp_code"))
    assert responses(messages) == ["utter_otp_sent"]
    assert len(outbox.messages("+6281234567002")) == 2
    assert events[-1] == SlotSet("requested_slot", "otp_code")


def test_verified_conversation_skips_verification_in_the_next_menu(outbox):
    verify("c1", "081234567002", outbox, form=ValidateStatusForm, phone="+6281234567002")
    tr = tracker("c1", "download sertifikat", intent="download_certificate")
    events, messages = run(ValidateCertificateForm(), tr)
    assert events == [SlotSet("requested_slot", "dose")]
    assert messages == []


def test_forged_slots_give_no_personal_data(backend):
    """A tracker claiming everything is verified: the backend's session decides, and there is none."""
    forged = {"phone_number": "+6281234567001", "otp_code": "123456", "person": "Budi Santoso", "dose": "3",
              "info_field": "name", "new_value": "Penyusup", "change_confirmed": "yes", "new_phone_otp": "verified"}
    for action in (ActionSendCertificate(), ActionShowStatus(), ActionApplyPersonalInfo()):
        events, messages = run(action, tracker("intruder", form=None, slots=forged))
        assert responses(messages) == ["utter_session_expired"]
        assert events == [SlotSet(name, None) for name in forged]  # what was set is cleared
        assert all("Budi" not in str(m) and "link" not in m for m in messages)
    links = backend.db.run(lambda cur: (cur.execute("SELECT count(*) AS n FROM certificate_links"), cur.fetchone())[1])
    assert links["n"] == 0


def test_certificate_link_after_choosing_the_booster(outbox, backend):
    verify("c1", "081234567001", outbox)
    run(ValidateCertificateForm(), tracker("c1", "1", requested="person"))
    events, _ = run(ValidateCertificateForm(), tracker("c1", "booster", requested="dose"))
    assert events == [SlotSet("dose", "3"), SlotSet("form_errors", 0), SlotSet("requested_slot", None)]
    events, messages = run(ActionSendCertificate(), tracker("c1", form=None, slots={"dose": "3"}))
    assert events == [SlotSet("dose", None)]
    assert responses(messages) == ["utter_certificate_ready"]
    link = messages[0]["link"]
    assert link.startswith("http://localhost:5055/certificates/") and link.endswith(".pdf")
    assert backend.repo.certificate_by_token(link.rsplit("/", 1)[1][:-4])["dose"] == 3
    assert messages[0]["masked_nik"] == "3174********0001"
    # The certificate as data too (utter_certificate_ready's custom part is filled from these).
    assert link == f"http://localhost:5055/certificates/{messages[0]['token']}.pdf"
    assert messages[0]["dose_number"] == 3


def test_dose_recorded_but_not_certified_is_explained(outbox):
    verify("c1", "081234567005", outbox, phone="+6281234567005")
    events, messages = run(ActionSendCertificate(), tracker("c1", form=None, slots={"dose": "2"}))
    assert responses(messages) == ["utter_certificate_processing"]
    assert messages[0]["date"] == "29 Maret 2022"


def test_dose_not_recorded_is_refused_in_the_form(outbox):
    verify("c1", "081234567002", outbox, phone="+6281234567002")
    events, messages = run(ValidateCertificateForm(), tracker("c1", "booster", requested="dose"))
    assert events == [SlotSet("dose", None), SlotSet("form_errors", 1), SlotSet("requested_slot", "dose")]
    assert responses(messages) == ["utter_dose_not_recorded"]


def test_no_vaccination_at_all(outbox):
    verify("c1", "081234567004", outbox, form=ValidateStatusForm, phone="+6281234567004")
    _, messages = run(ActionSendCertificate(), tracker("c1", form=None))
    assert responses(messages) == ["utter_no_vaccination"]
    _, messages = run(ActionShowStatus(), tracker("c1", form=None))
    assert responses(messages) == ["utter_status"]
    assert messages[0]["doses"] == "• Belum ada dosis yang tercatat."


def test_status_lists_doses_and_booster(outbox):
    verify("c1", "081234567002", outbox, form=ValidateStatusForm, phone="+6281234567002")
    _, messages = run(ActionShowStatus(), tracker("c1", form=None))
    assert messages[0]["doses"].splitlines() == [
        "• Dosis 1: AstraZeneca (Vaxzevria), 10 Juni 2021, RS Hasan Sadikin Bandung - sertifikat terbit (SV-202106-000031)",
        "• Dosis 2: AstraZeneca (Vaxzevria), 2 September 2021, RS Hasan Sadikin Bandung - sertifikat terbit (SV-202109-000032)",
    ]
    assert messages[0]["booster"] == "Anda sudah dapat menerima booster (sejak 2 Maret 2022)."


def test_name_change_confirmed_and_applied(outbox, backend):
    form = ValidateChangeInfoForm()
    verify("c1", "081234567003", outbox, form=ValidateChangeInfoForm, phone="+6281234567003")
    events, _ = run(form, tracker("c1", "nama", form="change_info_form", requested="info_field"))
    assert events[-1] == SlotSet("requested_slot", "new_value")
    events, _ = run(form, tracker("c1", "agus wijaya", form="change_info_form", requested="new_value",
                                  slots={"info_field": "name"}))
    assert SlotSet("new_value", "Agus Wijaya") in events and events[-1] == SlotSet("requested_slot", "change_confirmed")
    events, _ = run(form, tracker("c1", "ya", intent="affirm", form="change_info_form", requested="change_confirmed",
                                  slots={"info_field": "name", "new_value": "Agus Wijaya"}))
    assert events == [SlotSet("change_confirmed", "yes"), SlotSet("form_errors", 0), SlotSet("requested_slot", None)]
    events, messages = run(ActionApplyPersonalInfo(), tracker("c1", form=None, slots={
        "info_field": "name", "new_value": "Agus Wijaya", "change_confirmed": "yes"}))
    assert events == [SlotSet("info_field", None), SlotSet("new_value", None), SlotSet("change_confirmed", None)]
    assert responses(messages) == ["utter_changed_name"]
    assert backend.repo.current_person("c1").full_name == "Agus Wijaya"


def test_declined_change_changes_nothing(outbox, backend):
    verify("c1", "081234567003", outbox, form=ValidateChangeInfoForm, phone="+6281234567003")
    events, messages = run(ActionApplyPersonalInfo(), tracker("c1", form=None, slots={
        "info_field": "email", "new_value": "agus@example.com", "change_confirmed": "no"}))
    assert responses(messages) == ["utter_change_declined"]
    assert backend.repo.current_person("c1").email is None


@pytest.mark.parametrize("text, intent, answer", [
    ("gak jadi", "cancel", "no"), ("batal", "cancel", "no"), ("mboten", "nlu_fallback", "no"),
    ("kagak usah", "inform", "no"), ("iya kak", "affirm", "yes"), ("nggih", "affirm", "yes")])
def test_a_confirmation_answered_in_slang_or_with_a_cancel(outbox, text, intent, answer):
    """At "Ubah ... ? Balas Ya atau Tidak." a cancel means no; the words of "tidak" in the NLU's
    slang lexicon are read as no whatever the intent."""
    verify("c1", "081234567003", outbox, form=ValidateChangeInfoForm, phone="+6281234567003")
    events, messages = run(ValidateChangeInfoForm(), tracker(
        "c1", text, intent=intent, form="change_info_form", requested="change_confirmed",
        slots={"info_field": "name", "new_value": "Agus Wijaya"}))
    assert events == [SlotSet("change_confirmed", answer), SlotSet("form_errors", 0), SlotSet("requested_slot", None)]
    assert messages == []


def test_phone_change_needs_the_code_sent_to_the_new_number(outbox, backend, clock):
    form = ValidateChangeInfoForm()
    verify("c1", "081234567004", outbox, form=ValidateChangeInfoForm, phone="+6281234567004")
    slots = {"info_field": "phone"}
    events, _ = run(form, tracker("c1", "0813-1111-2222", form="change_info_form", requested="new_value", slots=slots))
    assert SlotSet("new_value", "+6281311112222") in events
    slots["new_value"] = "+6281311112222"
    events, messages = run(form, tracker("c1", "ya", intent="affirm", form="change_info_form",
                                         requested="change_confirmed", slots=slots))
    assert responses(messages) == ["utter_new_phone_otp_sent"]
    assert events[-1] == SlotSet("requested_slot", "new_phone_otp")
    slots["change_confirmed"] = "yes"
    code = outbox.last_code("+6281311112222")
    assert backend.repo.account_phone("c1") == "+6281234567004"  # not before the code
    events, _ = run(form, tracker("c1", code, form="change_info_form", requested="new_phone_otp", slots=slots))
    assert events == [SlotSet("new_phone_otp", "verified"), SlotSet("form_errors", 0), SlotSet("requested_slot", None)]
    assert backend.repo.account_phone("c1") == "+6281311112222"
    _, messages = run(ActionApplyPersonalInfo(), tracker("c1", form=None, slots={**slots, "new_phone_otp": "verified"}))
    assert responses(messages) == ["utter_changed_phone"] and messages[0]["masked_phone"] == "0813****2222"


def test_nik_correction_opens_a_request(outbox):
    verify("c1", "081234567004", outbox, form=ValidateChangeInfoForm, phone="+6281234567004")
    events, _ = run(ValidateChangeInfoForm(), tracker("c1", "NIK saya salah", form="change_info_form",
                                                      requested="info_field"))
    assert events == [SlotSet("info_field", "nik"), SlotSet("new_value", None), SlotSet("change_confirmed", None),
                      SlotSet("new_phone_otp", None), SlotSet("form_errors", 0), SlotSet("requested_slot", None)]
    _, messages = run(ActionApplyPersonalInfo(), tracker("c1", form=None, slots={"info_field": "nik"}))
    assert responses(messages) == ["utter_correction_request"] and messages[0]["reference"] == "PL-2026-000001"


def test_cancel_and_goodbye(outbox, backend):
    verify("c1", "081234567002", outbox, phone="+6281234567002")
    events, _ = run(ActionCancel(), tracker("c1", "batal", intent="cancel", slots={"dose": "2"}))
    assert events == [ActiveLoop(None), SlotSet("requested_slot", None), SlotSet("dose", None)]
    assert backend.repo.session_state("c1") == "ready"  # cancelling a step keeps the session
    events, _ = run(ActionEndSession(), tracker("c1", "selesai", intent="goodbye",
                                                slots={"person": "Budi Santoso", "form_errors": 2}))
    assert events == [ActiveLoop(None), SlotSet("requested_slot", None), SlotSet("person", None),
                      SlotSet("form_errors", 0)]
    assert backend.repo.session_state("c1") == "none"


def test_menu_slots_are_cleared_by_events_only_where_something_is_set():
    assert reset_flow_events() == RESET  # a validation action's tracker may differ from Rasa's: all
    assert reset_flow_events(tracker("c1", form=None)) == []
    assert reset_flow_events(tracker("c1", form=None, slots={"otp_code": "123456", "form_errors": 1})) == [
        SlotSet("otp_code", None), SlotSet("form_errors", 0)]


def test_ask_affirmation_offers_the_likely_meanings():
    tr = tracker("c1", "sertif", intent="nlu_fallback", form=None)
    tr.latest_message["intent_ranking"] = [
        {"name": "nlu_fallback", "confidence": 0.5}, {"name": "download_certificate", "confidence": 0.4},
        {"name": "check_vaccination_status", "confidence": 0.3}, {"name": "out_of_scope", "confidence": 0.1}]
    _, messages = run(ActionAskAffirmation(), tr)
    assert [b["payload"] for b in messages[0]["buttons"]] == ["/download_certificate",
                                                              "/check_vaccination_status", "/out_of_scope"]


def test_database_down_asks_the_same_question_again(database_url, settings_env, clock, outbox):
    verify("c1", "081234567002", outbox, phone="+6281234567002")
    down = assembled(Settings.from_env(settings_env), dsn="host=/nonexistent dbname=x connect_timeout=1",
                          clock=clock)
    action_backend.set_backend(down)
    events, messages = run(ValidateCertificateForm(), tracker("c1", "2", requested="dose"))
    assert events == [SlotSet("dose", None), SlotSet("requested_slot", "dose")]
    assert responses(messages) == ["utter_service_unavailable"]
    events, messages = run(ActionSendCertificate(), tracker("c1", form=None, slots={"dose": "2"}))
    assert events == [] and responses(messages) == ["utter_service_unavailable"]


def test_on_whatsapp_the_senders_own_number_is_offered(outbox):
    from actions.forms import ActionAskPhoneNumber

    tr = tracker("6281234567002", "download", intent="download_certificate")
    tr.latest_message["metadata"] = {"wa_id": "6281234567002"}
    _, messages = run(ActionAskPhoneNumber(), tr)
    assert responses(messages) == ["utter_ask_phone_number_whatsapp"]
    assert DOMAIN["responses"]["utter_ask_phone_number_whatsapp"][0]["buttons"] == [
        {"title": "Pakai nomor WA ini", "payload": "nomor whatsapp ini"}]
    _, messages = run(ActionAskPhoneNumber(), tracker("rest-user", "download"))
    assert responses(messages) == ["utter_ask_phone_number"]

    answer = tracker("6281234567002", "nomor whatsapp ini", requested="phone_number")
    answer.latest_message["metadata"] = {"wa_id": "6281234567002"}
    events, messages = run(ValidateCertificateForm(), answer)
    assert SlotSet("phone_number", "+6281234567002") in events
    assert len(outbox.messages("+6281234567002")) == 1  # the code goes to that (registered) number


@pytest.mark.parametrize("text", [
    "tanggal lahir", "tgl lahir saya salah", "ganti nama", "nomor hp", "no. hp", "NIK", "e-mail", "email saya",
    "surel", "ubah ttl", "nomor", "whatsapp", "telp", "namanya", "emailnya", "tanggal-lahir", "mail",
    "nama dan nomor", "ganti data", "", "nomor induk kependudukan", "hp baru", "wa", "wah", "birth date"])
def test_fields_are_read_as_by_checking_each_word_in_turn(text):
    """parse_field's one pattern per field finds what checking its words one by one finds."""
    import re
    from actions.parsing import FIELD_WORDS, parse_field, words

    def word_by_word(text):
        lowered, raw = " ".join(words(text.replace("-", ""))), text.lower()
        for field, names in FIELD_WORDS:
            for name in names:
                pattern = rf"\b{re.escape(name)}\b"
                if re.search(pattern, lowered) or re.search(pattern, raw):
                    return field
        return None

    assert parse_field(text) == word_by_word(text)
