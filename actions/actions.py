"""What happens when a menu's questions are answered, and the actions around the menus."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import date

from dateutil.relativedelta import relativedelta
from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from backend import DatabaseUnavailable
from backend.certificates import DOSE_LABELS, tanggal
from backend.identifiers import mask_phone
from backend.repository import NotVerified, PersonNotChosen

from . import wording
from .backend import call, get_backend
from .forms import FIELD_LABELS
from .parsing import parse_dose, parse_field
from .verified_form import REQUESTED_SLOT, reset_flow_events

BOOSTER_AFTER = relativedelta(months=6)


class MenuAction(Action, ABC):
    """A menu's final step: runs `finish`, turns backend failures into polite replies, and
    clears the menu's slots so the next menu starts clean."""

    @abstractmethod
    async def finish(self, dispatcher, tracker: Tracker) -> None:
        """Answer the citizen; backend exceptions are handled by run()."""

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain):
        try:
            await self.finish(dispatcher, tracker)
        except DatabaseUnavailable:
            dispatcher.utter_message(response="utter_service_unavailable")
            return []  # keep the answers: asking for the menu again completes it
        except (NotVerified, PersonNotChosen):
            # The form only ends after verification, so the session expired in between.
            dispatcher.utter_message(response="utter_session_expired")
        return reset_flow_events(tracker)


class ActionSendCertificate(MenuAction):
    def name(self) -> str:
        return "action_send_certificate"

    async def finish(self, dispatcher, tracker: Tracker) -> None:
        backend = get_backend()
        person, doses = await call(backend.repo.vaccination_record, tracker.sender_id)
        if not doses:
            dispatcher.utter_message(response="utter_no_vaccination", name=person.full_name)
            return
        dose = parse_dose(tracker.get_slot("dose") or "") or doses[-1].dose
        record = next((d for d in doses if d.dose == dose), None)
        if record is None:
            dispatcher.utter_message(response="utter_dose_not_recorded", dose_label=DOSE_LABELS[dose],
                                     name=person.full_name)
            return
        if record.certificate_id is None:
            dispatcher.utter_message(response="utter_certificate_processing",
                                     dose_label=DOSE_LABELS[dose], name=person.full_name,
                                     date=tanggal(record.vaccinated_on))
            return
        person, record, token = await call(backend.repo.create_certificate_link, tracker.sender_id, dose)
        link = f"{backend.settings.public_base_url}/certificates/{token}.pdf"
        dispatcher.utter_message(
            response="utter_certificate_ready", dose_label=DOSE_LABELS[dose], name=person.full_name,
            masked_nik=person.masked_nik, link=link, token=token, dose_number=dose,
            minutes=max(1, backend.settings.certificate_link_ttl_seconds // 60),
        )


def booster_note(doses, today: date) -> str:
    """Whether a booster is due: 6 months after the last dose of a complete primary series.
    The words are domain.yml's utter_booster_* responses."""
    if not doses:
        return wording.text("utter_booster_no_record")
    last = doses[-1]
    if last.dose >= 3:
        return wording.text("utter_booster_recorded")
    if last.dose < 2:
        return wording.text("utter_booster_primary_incomplete")
    due = last.vaccinated_on + BOOSTER_AFTER
    return wording.text("utter_booster_due" if due <= today else "utter_booster_not_yet", date=tanggal(due))


def status_line(d) -> str:
    issued = d.certificate_id is not None
    return wording.text("utter_status_dose_issued" if issued else "utter_status_dose_processing",
                        dose_label=DOSE_LABELS[d.dose], vaccine=d.vaccine, date=tanggal(d.vaccinated_on),
                        facility=d.facility, certificate_number=d.certificate_number)


class ActionShowStatus(MenuAction):
    def name(self) -> str:
        return "action_show_status"

    async def finish(self, dispatcher, tracker: Tracker) -> None:
        backend = get_backend()
        person, doses = await call(backend.repo.vaccination_record, tracker.sender_id)
        lines = [status_line(d) for d in doses] or [wording.text("utter_status_no_doses")]
        dispatcher.utter_message(
            response="utter_status", name=person.full_name, masked_nik=person.masked_nik,
            doses="\n".join(lines), booster=booster_note(doses, backend.repo.clock().date()),
        )


class ActionApplyPersonalInfo(MenuAction):
    def name(self) -> str:
        return "action_apply_personal_info"

    async def finish(self, dispatcher, tracker: Tracker) -> None:
        repo = get_backend().repo
        await call(repo.current_person, tracker.sender_id)  # verified, person chosen: or raises
        field = parse_field(tracker.get_slot("info_field") or "")
        if field in ("nik", "birth_date"):
            _, reference = await call(repo.open_correction_request, tracker.sender_id, field)
            dispatcher.utter_message(response="utter_correction_request",
                                     field_label=FIELD_LABELS[field], reference=reference)
            return
        if tracker.get_slot("change_confirmed") == "no":
            dispatcher.utter_message(response="utter_change_declined")
            return
        if tracker.get_slot("change_confirmed") != "yes":
            return  # the form ended early and has said why
        if field == "name":
            person = await call(repo.change_name, tracker.sender_id, tracker.get_slot("new_value"))
            dispatcher.utter_message(response="utter_changed_name", name=person.full_name)
        elif field == "email":
            person = await call(repo.change_email, tracker.sender_id, tracker.get_slot("new_value"))
            dispatcher.utter_message(response="utter_changed_email", email=person.email)
        elif field == "phone" and tracker.get_slot("new_phone_otp") == "verified":
            # Applied when the code sent to the new number was checked (one transaction).
            phone = await call(repo.account_phone, tracker.sender_id)
            dispatcher.utter_message(response="utter_changed_phone", masked_phone=mask_phone(phone))


class ActionCancel(Action):
    """Leave whatever menu is running; keeps the verified session."""

    def name(self) -> str:
        return "action_cancel"

    async def run(self, dispatcher, tracker: Tracker, domain):
        return [ActiveLoop(None), SlotSet(REQUESTED_SLOT, None)] + reset_flow_events(tracker)


class ActionEndSession(Action):
    """"selesai" / goodbye: the verified session ends now rather than after 15 minutes."""

    def name(self) -> str:
        return "action_end_session"

    async def run(self, dispatcher, tracker: Tracker, domain):
        try:
            await call(get_backend().repo.end_session, tracker.sender_id)
        except DatabaseUnavailable:
            pass  # it expires by itself; the goodbye should still be said
        return [ActiveLoop(None), SlotSet(REQUESTED_SLOT, None)] + reset_flow_events(tracker)


class ActionResendOtp(Action):
    """"kirim ulang" outside a form: there is no code being waited for."""

    def name(self) -> str:
        return "action_resend_otp"

    async def run(self, dispatcher, tracker: Tracker, domain):
        dispatcher.utter_message(response="utter_resend_outside_flow")
        return []


class ActionAskAffirmation(Action):
    """The first stage of the two-stage fallback: offer the likeliest meanings as buttons.
    The choices are the buttons of utter_ask_affirmation in domain.yml, one per intent: the
    three likeliest intents that have one, then the /out_of_scope one ("none of these")."""

    def name(self) -> str:
        return "action_default_ask_affirmation"

    async def run(self, dispatcher, tracker: Tracker, domain):
        choices = {b["payload"]: b for b in wording.buttons("utter_ask_affirmation")}
        none_of_these = choices.pop("/out_of_scope", None)
        ranking = tracker.latest_message.get("intent_ranking") or []
        likely = [f"/{entry.get('name')}" for entry in ranking]
        buttons = [choices[payload] for payload in dict.fromkeys(likely) if payload in choices][:3]
        if none_of_these:
            buttons.append(none_of_these)
        # The text alone from the response: sending the response itself would add all its buttons.
        dispatcher.utter_message(text=wording.text("utter_ask_affirmation"), buttons=buttons)
        return []

