"""The form validation every menu shares: verify first (phone number, OTP, person), then ask
the menu's own questions; count wrong formats and end the form politely at the third.

Whether the conversation is verified, and for whom, comes from the backend's auth_sessions
at every turn, never from slot values: the verification slots only hold this turn's answers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from rasa_sdk import FormValidationAction, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from backend import DatabaseUnavailable
from backend.identifiers import InvalidInput, parse_otp, parse_phone
from backend.otp import LOGIN, Issued
from backend.repository import NotVerified, PersonNotChosen

from .backend import call, get_backend
from .parsing import choose_person, words

MAX_FORMAT_ERRORS = 3
REQUESTED_SLOT = "requested_slot"

# Every slot a menu fills; all are cleared when a menu ends, is cancelled or is aborted.
FLOW_SLOTS = ["phone_number", "otp_code", "person", "dose", "info_field", "new_value",
              "change_confirmed", "new_phone_otp", "problem_category", "problem_description",
              "report_confirmed", "ticket_reference"]

PHONE_HINTS = {
    "foreign": "utter_invalid_phone_foreign",
    "not_mobile": "utter_invalid_phone_not_mobile",
}

RESEND_WORDS = {"ulang", "resend", "lagi", "kirimkan"}
# The button offered on WhatsApp (actions.forms.ActionAskPhoneNumber) and its typed forms.
THIS_NUMBER = {"nomor wa ini", "nomor whatsapp ini", "pakai nomor wa ini", "nomor ini", "no ini",
               "pakai nomor ini", "nomor yang ini"}


def whatsapp_number(tracker: Tracker) -> str | None:
    """The sender's WhatsApp number (wa_id), set by the WhatsApp channel from Meta's signed
    payload. Only ever used as the number to send a code to: the code still has to be read
    on that phone, so a forged value gains nothing."""
    metadata = (tracker.latest_message or {}).get("metadata") or {}
    if not metadata:
        user = next((e for e in reversed(tracker.events) if e.get("event") == "user"), {})
        metadata = user.get("metadata") or {}
    wa_id = str(metadata.get("wa_id") or "")
    return "+" + wa_id if wa_id.isdigit() else None


def reset_flow_events(tracker: Tracker | None = None) -> list[SlotSet]:
    """The events that clear a menu's slots. Given the tracker, only for the slots that are not
    clear already: a finished menu wrote 13 slot events of which most changed nothing, and each
    was stored, sent back and forth and replayed at every later prediction. Without it (in a
    validation action, whose tracker holds values Rasa may not have) every slot is cleared."""
    cleared = {name: None for name in FLOW_SLOTS} | {"form_errors": 0}
    return [SlotSet(name, value) for name, value in cleared.items()
            if tracker is None or tracker.get_slot(name) != value]


def asks_for_resend(tracker: Tracker, text: str) -> bool:
    if tracker.get_intent_of_latest_message() == "resend_otp":
        return True
    tokens = set(words(text))
    return "kirim" in tokens and bool(tokens & RESEND_WORDS) or "resend" in tokens


@dataclass
class Flow:
    """What one run of a validation action knows; lives on the tracker for that run only."""
    state: str                      # "none", "choose_person" or "ready" (from auth_sessions)
    errors: int = 0
    aborted: bool = False
    abort_response: str | None = "utter_too_many_errors"
    cache: dict[str, Any] = field(default_factory=dict)


def flow_of(tracker: Tracker) -> Flow:
    return tracker.flow  # set at the start of VerifiedFormValidation.run


class VerifiedFormValidation(FormValidationAction, ABC):
    """Base class of the three menus' validation actions."""

    @abstractmethod
    def name(self) -> str:
        """validate_<form name>"""

    async def menu_slots(self, dispatcher, tracker: Tracker, domain: DomainDict) -> list[str]:
        """The menu's own questions, once the person is known; subclasses override."""
        return []

    # --- the run ------------------------------------------------------------------------------

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict):
        backend = get_backend()
        requested = tracker.get_slot(REQUESTED_SLOT)
        try:
            state = await call(backend.repo.session_state, tracker.sender_id)
            tracker.flow = Flow(state=state, errors=int(tracker.get_slot("form_errors") or 0))
            events = await super().run(dispatcher, tracker, domain)
        except DatabaseUnavailable:
            dispatcher.utter_message(response="utter_service_unavailable")
            # Forget this turn's raw answers and ask the same question again.
            events = [SlotSet(name, None) for name in tracker.slots_to_validate()]
            return events + ([SlotSet(REQUESTED_SLOT, requested)] if requested else [])
        except (NotVerified, PersonNotChosen):
            dispatcher.utter_message(response="utter_session_expired")
            return [SlotSet(name, None) for name in ("phone_number", "otp_code", "person")] + [
                SlotSet(REQUESTED_SLOT, "phone_number")]
        flow = flow_of(tracker)
        if flow.aborted:
            if flow.abort_response:
                dispatcher.utter_message(response=flow.abort_response)
            return reset_flow_events() + [SlotSet(REQUESTED_SLOT, None)]
        return events

    async def required_slots(self, domain_slots, dispatcher, tracker: Tracker, domain: DomainDict):
        flow = flow_of(tracker)
        if flow.aborted:
            return []
        if flow.state == "none":
            return ["phone_number", "otp_code"]
        menu = await self.menu_slots(dispatcher, tracker, domain)
        return (["person"] if flow.state == "choose_person" else []) + menu

    # --- helpers for validate_* ---------------------------------------------------------------

    def invalid(self, dispatcher, tracker: Tracker, slot: str, response: str, **values) -> dict:
        """A wrong format: a specific hint, and the question again; the third ends the form."""
        flow = flow_of(tracker)
        flow.errors += 1
        if flow.errors >= MAX_FORMAT_ERRORS:
            flow.aborted = True
            return {slot: None}
        dispatcher.utter_message(response=response, **values)
        return {slot: None, "form_errors": flow.errors}

    def valid(self, tracker: Tracker, **slots) -> dict:
        flow_of(tracker).errors = 0
        return {**slots, "form_errors": 0}

    def abort(self, tracker: Tracker) -> None:
        """End the form after a message the validator already sent (rate limits)."""
        flow = flow_of(tracker)
        flow.aborted = True
        flow.abort_response = None

    def issued_reply(self, dispatcher, tracker: Tracker, issued: Issued, sent_response: str) -> bool:
        """Tell the citizen what happened to a code request; True when a code is on its way."""
        minutes = max(1, get_backend().settings.otp_ttl_seconds // 60)
        if issued.status == "sent":
            dispatcher.utter_message(response=sent_response, masked_phone=issued.masked_phone,
                                     minutes=minutes)
            return True
        if issued.status == "too_soon":
            dispatcher.utter_message(response="utter_otp_too_soon", seconds=issued.retry_after)
            return False
        if issued.status == "rate_limited":
            dispatcher.utter_message(response="utter_otp_rate_limited",
                                     minutes=max(1, (issued.retry_after + 59) // 60))
        else:
            dispatcher.utter_message(response="utter_otp_busy")
        self.abort(tracker)
        return False

    # --- verification -------------------------------------------------------------------------

    async def validate_phone_number(self, value: Any, dispatcher, tracker: Tracker, domain) -> dict:
        if flow_of(tracker).state != "none":
            return {"phone_number": None}
        text = " ".join(words(str(value)))
        if text in THIS_NUMBER and whatsapp_number(tracker):
            value = whatsapp_number(tracker)
        try:
            phone = parse_phone(str(value))
        except InvalidInput as exc:
            response = PHONE_HINTS.get(exc.reason, "utter_invalid_phone")
            return self.invalid(dispatcher, tracker, "phone_number", response)
        return await self._request_login_code(dispatcher, tracker, phone)

    async def _request_login_code(self, dispatcher, tracker: Tracker, phone: str) -> dict:
        issued = await call(get_backend().otp.request, tracker.sender_id, phone, LOGIN)
        self.issued_reply(dispatcher, tracker, issued, "utter_otp_sent")
        if issued.status in ("sent", "too_soon"):
            # too_soon: a code reached this number less than a minute ago; it can be typed now.
            return self.valid(tracker, phone_number=phone, otp_code=None)
        return {"phone_number": None, "otp_code": None}

    async def validate_otp_code(self, value: Any, dispatcher, tracker: Tracker, domain) -> dict:
        flow = flow_of(tracker)
        if flow.state != "none":
            return {"otp_code": None}
        backend = get_backend()
        text = str(value)
        if asks_for_resend(tracker, text):
            phone = await call(backend.otp.pending_phone, tracker.sender_id, LOGIN)
            if phone is None:
                return {"phone_number": None, "otp_code": None}
            return await self._request_login_code(dispatcher, tracker, phone)
        if len([c for c in text if c.isdigit()]) > 6:
            # A phone number at this step: the citizen wants the code sent to that number.
            return await self.validate_phone_number(text, dispatcher, tracker, domain)
        try:
            code = parse_otp(text)
        except InvalidInput:
            return self.invalid(dispatcher, tracker, "otp_code", "utter_invalid_otp")

        checked = await call(backend.otp.verify, tracker.sender_id, code, LOGIN)
        if checked.status == "ok":
            flow.state = await call(backend.repo.session_state, tracker.sender_id)
            dispatcher.utter_message(response="utter_verified")
            if flow.state == "ready":
                person = await call(backend.repo.current_person, tracker.sender_id)
                dispatcher.utter_message(response="utter_person_chosen", name=person.full_name,
                                         masked_nik=person.masked_nik)
            return self.valid(tracker, phone_number=None, otp_code=None, person=None)
        if checked.status == "wrong":
            dispatcher.utter_message(response="utter_otp_wrong", attempts_left=checked.attempts_left)
            return self.valid(tracker, otp_code=None)  # a wrong code is not a wrong format
        if checked.status == "none":
            dispatcher.utter_message(response="utter_otp_none")
            return {"phone_number": None, "otp_code": None}
        dispatcher.utter_message(
            response="utter_otp_void" if checked.status == "void" else "utter_otp_expired")
        return {"otp_code": None}

    async def validate_person(self, value: Any, dispatcher, tracker: Tracker, domain) -> dict:
        flow = flow_of(tracker)
        if flow.state != "choose_person":
            return {"person": None}
        backend = get_backend()
        people = await call(backend.repo.people, tracker.sender_id)
        chosen = choose_person(str(value), people)
        if chosen is None:
            return self.invalid(dispatcher, tracker, "person", "utter_invalid_person")
        person = await call(backend.repo.choose_person, tracker.sender_id, chosen.id)
        flow.state = "ready"
        flow.cache.clear()
        dispatcher.utter_message(response="utter_person_chosen", name=person.full_name,
                                 masked_nik=person.masked_nik)
        return self.valid(tracker, person=person.full_name)
