"""The three menus' forms: their own questions after verification, and the questions whose
choices come from the citizen's records (which person, which dose, confirm what)."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from backend import DatabaseUnavailable
from backend.certificates import DOSE_LABELS, tanggal
from backend.identifiers import InvalidInput, mask_phone, parse_email, parse_name, parse_otp, parse_phone
from backend.otp import CHANGE_PHONE
from backend.repository import NotVerified, PersonNotChosen

from . import wording
from .backend import call, get_backend
from .parsing import answer_yes_no, parse_dose, parse_field
from .verified_form import VerifiedFormValidation, asks_for_resend, flow_of, whatsapp_number

# How each field is named in a sentence: domain.yml's utter_field_label_<field>.
FIELD_LABELS = {field: wording.text(f"utter_field_label_{field}")
                for field in ("name", "phone", "email", "nik", "birth_date")}
SELF_SERVICE_FIELDS = ("name", "email", "phone")


def national(e164: str) -> str:
    """+6281234567009 -> 0812-3456-7009, as the citizen typed it."""
    digits = "0" + e164[3:]
    return f"{digits[:4]}-{digits[4:8]}-{digits[8:]}"


# --- Download Sertifikat ------------------------------------------------------------------------


class ValidateCertificateForm(VerifiedFormValidation):
    def name(self) -> str:
        return "validate_certificate_form"

    async def _doses(self, tracker: Tracker):
        flow = flow_of(tracker)
        if "doses" not in flow.cache:
            _, flow.cache["doses"] = await call(get_backend().repo.vaccination_record, tracker.sender_id)
        return flow.cache["doses"]

    async def menu_slots(self, dispatcher, tracker, domain) -> list[str]:
        if flow_of(tracker).state != "ready":
            return ["dose"]
        # With one dose or none there is nothing to choose: the certificate (or the reason
        # there is none) follows straight away.
        return ["dose"] if len(await self._doses(tracker)) > 1 else []

    async def validate_dose(self, value: Any, dispatcher, tracker: Tracker, domain) -> dict:
        dose = parse_dose(str(value))
        if dose is None:
            return self.invalid(dispatcher, tracker, "dose", "utter_invalid_dose")
        if flow_of(tracker).state == "ready":
            recorded = {d.dose for d in await self._doses(tracker)}
            if dose not in recorded:
                person = await call(get_backend().repo.current_person, tracker.sender_id)
                return self.invalid(dispatcher, tracker, "dose", "utter_dose_not_recorded",
                                    dose_label=DOSE_LABELS[dose], name=person.full_name)
        return self.valid(tracker, dose=str(dose))


class ActionAskDose(Action):
    def name(self) -> str:
        return "action_ask_dose"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain):
        try:
            _, doses = await call(get_backend().repo.vaccination_record, tracker.sender_id)
        except (DatabaseUnavailable, NotVerified, PersonNotChosen):
            dispatcher.utter_message(response="utter_invalid_dose")
            return []
        lines, buttons = [], []
        for d in doses:
            lines.append(wording.text("utter_dose_choice" if d.certificate_id else "utter_dose_choice_processing",
                                      number=d.dose, dose_label=DOSE_LABELS[d.dose], vaccine=d.vaccine,
                                      date=tanggal(d.vaccinated_on)))
            buttons.append({"title": DOSE_LABELS[d.dose].split(" (")[0], "payload": str(d.dose)})
        dispatcher.utter_message(response="utter_choose_dose", doses="\n".join(lines), buttons=buttons)
        return []


# --- Status Vaksinasi ---------------------------------------------------------------------------


class ValidateStatusForm(VerifiedFormValidation):
    def name(self) -> str:
        return "validate_status_form"


# --- which phone number -------------------------------------------------------------------------


class ActionAskPhoneNumber(Action):
    """The phone question; on WhatsApp it offers the sender's own number as a button."""

    def name(self) -> str:
        return "action_ask_phone_number"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain):
        dispatcher.utter_message(response="utter_ask_phone_number_whatsapp" if whatsapp_number(tracker)
                                 else "utter_ask_phone_number")
        return []


# --- which person -------------------------------------------------------------------------------


class ActionAskPerson(Action):
    def name(self) -> str:
        return "action_ask_person"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain):
        try:
            people = await call(get_backend().repo.people, tracker.sender_id)
        except (DatabaseUnavailable, NotVerified):
            dispatcher.utter_message(response="utter_invalid_person")
            return []
        lines = [f"{i}. {p.full_name} (NIK {p.masked_nik})" for i, p in enumerate(people, 1)]
        buttons = [{"title": p.full_name, "payload": str(i)} for i, p in enumerate(people, 1)]
        dispatcher.utter_message(response="utter_choose_person", people="\n".join(lines), buttons=buttons)
        return []


# --- Ubah Info Diri -----------------------------------------------------------------------------


class ValidateChangeInfoForm(VerifiedFormValidation):
    def name(self) -> str:
        return "validate_change_info_form"

    async def menu_slots(self, dispatcher, tracker, domain) -> list[str]:
        field = parse_field(tracker.get_slot("info_field") or "")
        if field not in SELF_SERVICE_FIELDS:
            return ["info_field"]  # NIK and date of birth: a correction request, no more questions
        slots = ["info_field", "new_value", "change_confirmed"]
        if field == "phone" and tracker.get_slot("change_confirmed") == "yes":
            slots.append("new_phone_otp")
        return slots

    async def validate_info_field(self, value: Any, dispatcher, tracker: Tracker, domain) -> dict:
        field = parse_field(str(value))
        if field is None:
            return self.invalid(dispatcher, tracker, "info_field", "utter_invalid_info_field")
        return self.valid(tracker, info_field=field, new_value=None, change_confirmed=None,
                          new_phone_otp=None)

    async def validate_new_value(self, value: Any, dispatcher, tracker: Tracker, domain) -> dict:
        field = parse_field(tracker.get_slot("info_field") or "")
        repo = get_backend().repo
        text = str(value)
        try:
            if field == "name":
                new = parse_name(text)
                current = (await call(repo.current_person, tracker.sender_id)).full_name
            elif field == "email":
                new = parse_email(text)
                current = (await call(repo.current_person, tracker.sender_id)).email or ""
            else:
                new = parse_phone(text)
                current = await call(repo.account_phone, tracker.sender_id)
        except InvalidInput:
            hint = {"name": "utter_invalid_name", "email": "utter_invalid_email"}.get(field, "utter_invalid_phone")
            return self.invalid(dispatcher, tracker, "new_value", hint)
        if new.casefold() == current.casefold():
            return self.invalid(dispatcher, tracker, "new_value", "utter_same_value")
        # Not whether another account holds a new number: that answer would tell anyone which
        # numbers are registered. The code sent to it comes first; the refusal only after it.
        return self.valid(tracker, new_value=new, change_confirmed=None)

    async def validate_change_confirmed(self, value: Any, dispatcher, tracker: Tracker, domain) -> dict:
        answer = answer_yes_no(tracker.get_intent_of_latest_message(), str(value))
        if answer is None:
            return self.invalid(dispatcher, tracker, "change_confirmed", "utter_invalid_confirmation")
        if not answer:
            return self.valid(tracker, change_confirmed="no")
        if parse_field(tracker.get_slot("info_field") or "") == "phone":
            if not await self._send_new_phone_code(dispatcher, tracker, tracker.get_slot("new_value")):
                return {"change_confirmed": None} if not flow_of(tracker).aborted else {}
        return self.valid(tracker, change_confirmed="yes")

    async def _send_new_phone_code(self, dispatcher, tracker: Tracker, phone: str) -> bool:
        issued = await call(get_backend().otp.request, tracker.sender_id, phone, CHANGE_PHONE)
        return self.issued_reply(dispatcher, tracker, issued, "utter_new_phone_otp_sent")

    async def validate_new_phone_otp(self, value: Any, dispatcher, tracker: Tracker, domain) -> dict:
        backend = get_backend()
        text = str(value)
        if asks_for_resend(tracker, text):
            phone = await call(backend.otp.pending_phone, tracker.sender_id, CHANGE_PHONE)
            await self._send_new_phone_code(dispatcher, tracker, phone or tracker.get_slot("new_value"))
            return {"new_phone_otp": None}
        try:
            code = parse_otp(text)
        except InvalidInput:
            return self.invalid(dispatcher, tracker, "new_phone_otp", "utter_invalid_otp")

        def apply_change(cur, phone):
            backend.repo.change_phone(cur, tracker.sender_id, phone)

        checked = await call(backend.otp.verify, tracker.sender_id, code, CHANGE_PHONE, apply_change)
        if checked.status == "rejected":  # one reply, whatever the reason the change was refused
            dispatcher.utter_message(response="utter_phone_unavailable")
            return {"new_value": None, "change_confirmed": None, "new_phone_otp": None}
        if checked.status == "ok":
            return self.valid(tracker, new_phone_otp="verified")
        if checked.status == "wrong":
            dispatcher.utter_message(response="utter_otp_wrong", attempts_left=checked.attempts_left)
            return self.valid(tracker, new_phone_otp=None)
        dispatcher.utter_message(
            response="utter_otp_void" if checked.status == "void" else "utter_otp_expired")
        return {"new_phone_otp": None}


class ActionAskNewValue(Action):
    def name(self) -> str:
        return "action_ask_new_value"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain):
        field = parse_field(tracker.get_slot("info_field") or "") or "name"
        current = ""
        if field == "name":
            try:
                current = (await call(get_backend().repo.current_person, tracker.sender_id)).full_name
            except (DatabaseUnavailable, NotVerified, PersonNotChosen):
                current = "-"
        dispatcher.utter_message(response=f"utter_new_value_{field}", current=current)
        return []


class ActionAskChangeConfirmed(Action):
    def name(self) -> str:
        return "action_ask_change_confirmed"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain):
        field = parse_field(tracker.get_slot("info_field") or "") or "name"
        new = tracker.get_slot("new_value") or ""
        repo = get_backend().repo
        try:
            if field == "phone":
                old, new = mask_phone(await call(repo.account_phone, tracker.sender_id)), national(new)
            else:
                person = await call(repo.current_person, tracker.sender_id)
                old = (person.full_name if field == "name" else person.email) or wording.text("utter_no_value_yet")
        except (DatabaseUnavailable, NotVerified, PersonNotChosen):
            dispatcher.utter_message(response="utter_service_unavailable")
            return [SlotSet("new_value", None)]
        dispatcher.utter_message(response="utter_confirm_change", field_label=FIELD_LABELS[field],
                                 old=old, new=new)
        return []
