"""Beyond the menus: reporting a problem (records checked and explained before a ticket),
following one's tickets, and handing the conversation to an officer."""

from __future__ import annotations

import re
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from backend import DatabaseUnavailable
from backend.certificates import DOSE_LABELS, tanggal
from backend.repository import NotVerified, PersonNotChosen
from backend.tickets import EXPECTED_DAYS, USUAL_PROCESSING_DAYS, Tickets, hari, officers_available, ticket_labels

from . import wording
from .backend import call, get_backend
from .parsing import answer_yes_no, words
from .verified_form import REQUESTED_SLOT, VerifiedFormValidation, reset_flow_events

REFERENCE = re.compile(r"\bPL-\d{4}-\d{6}\b", re.IGNORECASE)
MISSING = {"belum", "blm", "tidak", "tdk", "ga", "gak", "nggak", "enggak", "blom", "kok"}
APPEAR = {"muncul", "keluar", "ada", "terbit", "masuk", "tampil"}


# Each category's label is domain.yml's utter_ticket_category_<category>.
CATEGORIES = ticket_labels(wording.domain())


def tickets() -> Tickets:
    return Tickets(get_backend().repo, wording.domain())


def problem_category(text: str) -> str | None:
    """certificate_missing, wrong_data, otp_not_received or other, from what the citizen wrote."""
    # "keluar2", "masuk2": a word doubled, written with a 2, as Indonesians type it.
    tokens = {re.sub(r"(?<=[a-z])2$", "", token) for token in words(text)}
    if tokens & {"otp", "kode", "sms"} and tokens & (MISSING | {"masuk", "terima", "nyampe", "sampai"}):
        return "otp_not_received"
    if tokens & {"salah", "keliru", "beda", "berbeda", "typo", "tertukar"}:
        return "wrong_data"
    if tokens & {"sertifikat", "sertif", "sertifkat", "vaksin", "dosis", "booster"} and tokens & MISSING and tokens & APPEAR:
        return "certificate_missing"
    if tokens & {"lainnya", "lain"}:
        return "other"
    return None


class ValidateReportForm(VerifiedFormValidation):
    def name(self) -> str:
        return "validate_report_form"

    async def run(self, dispatcher, tracker: Tracker, domain):
        # The first message often says it all ("sertifikat dosis 2 sy blm muncul"): keep what it
        # tells while verification comes first, so it is not asked again afterwards.
        prefill = []
        if tracker.get_slot(REQUESTED_SLOT) is None and tracker.get_intent_of_latest_message() == "report_problem":
            text = tracker.latest_message.get("text") or ""
            category = problem_category(text)
            if category:
                prefill.append(SlotSet("problem_category", category))
                tracker.slots["problem_category"] = category
                if len(words(text)) >= 4:
                    prefill.append(SlotSet("problem_description", text))
                    tracker.slots["problem_description"] = text
        events = await super().run(dispatcher, tracker, domain)
        flow = getattr(tracker, "flow", None)
        return events if flow is None or flow.aborted else prefill + events

    async def menu_slots(self, dispatcher, tracker: Tracker, domain) -> list[str]:
        category = tracker.get_slot("problem_category")
        if category not in EXPECTED_DAYS:
            return ["problem_category"]
        middle = [] if category == "certificate_missing" else ["problem_description"]
        return ["problem_category"] + middle + ["report_confirmed"]

    async def validate_problem_category(self, value: Any, dispatcher, tracker: Tracker, domain) -> dict:
        category = problem_category(str(value))
        if category is None:
            return self.invalid(dispatcher, tracker, "problem_category", "utter_invalid_problem_category")
        return self.valid(tracker, problem_category=category)

    async def validate_problem_description(self, value: Any, dispatcher, tracker: Tracker, domain) -> dict:
        text = " ".join(str(value).split())
        if len(words(text)) < 3:
            return self.invalid(dispatcher, tracker, "problem_description", "utter_invalid_problem_description")
        return self.valid(tracker, problem_description=text[:1000])

    async def validate_report_confirmed(self, value: Any, dispatcher, tracker: Tracker, domain) -> dict:
        answer = answer_yes_no(tracker.get_intent_of_latest_message(), str(value))
        if answer is None:
            return self.invalid(dispatcher, tracker, "report_confirmed", "utter_invalid_confirmation")
        return self.valid(tracker, report_confirmed="yes" if answer else "no")


class ActionAskReportConfirmed(Action):
    """Before a ticket: for a missing certificate, what the records say (often the answer
    already); for the rest, the report as it will be sent. Then: send it?"""

    def name(self) -> str:
        return "action_ask_report_confirmed"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain):
        category = tracker.get_slot("problem_category") or "other"
        if category != "certificate_missing":
            dispatcher.utter_message(response="utter_confirm_report", label=CATEGORIES[category],
                                     description=tracker.get_slot("problem_description") or "-")
            return []
        try:
            diagnosis = await call(tickets().diagnose, tracker.sender_id)
        except (DatabaseUnavailable, NotVerified, PersonNotChosen):
            dispatcher.utter_message(response="utter_service_unavailable")
            return [SlotSet("problem_category", None)]
        name = diagnosis.person.full_name
        if diagnosis.kind == "no_record":
            dispatcher.utter_message(response="utter_diagnosis_no_record", name=name)
        elif diagnosis.kind == "other_account":
            dispatcher.utter_message(response="utter_diagnosis_other_account", name=name)
        elif diagnosis.kind == "processing":
            lines = []
            for dose, on, days in diagnosis.pending:
                late = days > USUAL_PROCESSING_DAYS
                lines.append(wording.text("utter_diagnosis_pending_late" if late else "utter_diagnosis_pending_usual",
                                          dose_label=DOSE_LABELS[dose], date=tanggal(on), days=days,
                                          usual_days=USUAL_PROCESSING_DAYS))
            dispatcher.utter_message(response="utter_diagnosis_processing", lines="\n".join(lines))
        else:
            dispatcher.utter_message(response="utter_diagnosis_all_issued", name=name,
                                     doses=", ".join(DOSE_LABELS[d] for d in diagnosis.issued))
        dispatcher.utter_message(response="utter_ask_report_confirmed")
        return []


class ActionOpenTicket(Action):
    def name(self) -> str:
        return "action_open_ticket"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain):
        confirmed = tracker.get_slot("report_confirmed")
        category = tracker.get_slot("problem_category")
        if confirmed == "no":
            dispatcher.utter_message(response="utter_report_not_sent")
        elif confirmed == "yes" and category in EXPECTED_DAYS:
            description = tracker.get_slot("problem_description") or CATEGORIES[category]
            try:
                ticket = await call(tickets().open, tracker.sender_id, category, description,
                                    tracker.get_latest_input_channel())
            except DatabaseUnavailable:
                dispatcher.utter_message(response="utter_service_unavailable")
                return []  # answers kept: asking again completes it
            except (NotVerified, PersonNotChosen):
                dispatcher.utter_message(response="utter_session_expired")
                return reset_flow_events(tracker)
            dispatcher.utter_message(response="utter_ticket_opened", reference=ticket.reference,
                                     label=ticket.label, days=EXPECTED_DAYS[category])
        return reset_flow_events(tracker)


class ValidateTicketForm(VerifiedFormValidation):
    def name(self) -> str:
        return "validate_ticket_form"

    async def run(self, dispatcher, tracker: Tracker, domain):
        prefill = []
        if tracker.get_slot(REQUESTED_SLOT) is None:
            found = REFERENCE.search(tracker.latest_message.get("text") or "")
            if found:
                prefill.append(SlotSet("ticket_reference", found.group(0).upper()))
        return prefill + await super().run(dispatcher, tracker, domain)


# A ticket's status as the citizen reads it: domain.yml's utter_ticket_status_<status>.
STATUS_LABELS = {status: wording.text(f"utter_ticket_status_{status}")
                 for status in ("diterima", "diproses", "selesai", "ditolak")}


class ActionShowTickets(Action):
    def name(self) -> str:
        return "action_show_tickets"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain):
        reference = tracker.get_slot("ticket_reference")
        try:
            found = await call(tickets().of_account, tracker.sender_id, reference)
        except DatabaseUnavailable:
            dispatcher.utter_message(response="utter_service_unavailable")
            return []
        except (NotVerified, PersonNotChosen):
            dispatcher.utter_message(response="utter_session_expired")
            return reset_flow_events(tracker)
        if not found:
            dispatcher.utter_message(response="utter_ticket_not_found" if reference else "utter_no_tickets",
                                     reference=reference or "")
            return reset_flow_events(tracker)
        lines = []
        for t in found:
            lines.append(wording.text("utter_tickets_line", reference=t.reference, label=t.label,
                                      status=STATUS_LABELS.get(t.status, t.status),
                                      date=tanggal(t.created_at.date())))
            if t.last_note:
                lines.append(wording.text("utter_tickets_note", note=t.last_note))
        dispatcher.utter_message(response="utter_tickets", tickets="\n".join(lines))
        return reset_flow_events(tracker)


class ActionHandoff(Action):
    """"mau bicara dengan petugas": a handoff ticket with the conversation so far (masked);
    from the next message the channels pass this conversation to the officers."""

    def name(self) -> str:
        return "action_handoff"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain):
        transcript = []
        for event in tracker.events:
            if event.get("event") in ("user", "bot") and event.get("text"):
                who = "Warga" if event["event"] == "user" else "Bot"
                transcript.append(f"{who}: {event['text']}")
        backend = get_backend()
        try:
            ticket = await call(tickets().start_handoff, tracker.sender_id,
                                tracker.get_latest_input_channel() or "rest", transcript)
        except DatabaseUnavailable:
            dispatcher.utter_message(response="utter_service_unavailable")
            return []
        settings = backend.settings
        available, opens = officers_available(backend.repo.clock(), settings.officer_hours, settings.officer_days)
        if available:
            dispatcher.utter_message(response="utter_handoff_started", reference=ticket.reference)
        else:
            when = wording.text("utter_handoff_when", day=hari(opens.date()), date=tanggal(opens.date()),
                                time=f"{opens:%H.%M}")
            dispatcher.utter_message(response="utter_handoff_outside_hours", reference=ticket.reference,
                                     hours=settings.officer_hours.replace(":", "."), when=when)
        return [ActiveLoop(None), SlotSet(REQUESTED_SLOT, None)] + reset_flow_events(tracker)
