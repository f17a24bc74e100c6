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
    """Whether a booster is due: 6 months after the last dose of a complete primary series."""
    if not doses:
        return "Belum ada data vaksinasi."
    last = doses[-1]
    if last.dose >= 3:
        return "Vaksinasi booster sudah tercatat. ✅"
    if last.dose < 2:
        return "Dosis 2 belum tercatat: lengkapi vaksinasi primer terlebih dahulu."
    due = last.vaccinated_on + BOOSTER_AFTER
    if due <= today:
        return f"Anda sudah dapat menerima booster (sejak {tanggal(due)})."
    return f"Booster dapat diberikan mulai {tanggal(due)}."


class ActionShowStatus(MenuAction):
    def name(self) -> str:
        return "action_show_status"

    async def finish(self, dispatcher, tracker: Tracker) -> None:
        backend = get_backend()
        person, doses = await call(backend.repo.vaccination_record, tracker.sender_id)
        lines = [
            f"• {DOSE_LABELS[d.dose]}: {d.vaccine}, {tanggal(d.vaccinated_on)}, {d.facility} - "
            + (f"sertifikat terbit ({d.certificate_number})" if d.certificate_id else "sertifikat masih diproses")
            for d in doses
        ] or ["• Belum ada dosis yang tercatat."]
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


# Labels for "Maksud Anda ...?": what each intent offers, in the citizen's words.
INTENT_LABELS = {
    "download_certificate": "Download sertifikat vaksin",
    "check_vaccination_status": "Cek status vaksinasi",
    "change_personal_info": "Ubah data diri",
    "report_problem": "Melaporkan masalah",
    "check_ticket_status": "Cek permintaan koreksi",
    "request_human": "Bicara dengan petugas",
    "resend_otp": "Kirim ulang kode OTP",
    "show_menu": "Lihat menu",
}


class ActionAskAffirmation(Action):
    """The first stage of the two-stage fallback: offer the likeliest meanings as buttons."""

    def name(self) -> str:
        return "action_default_ask_affirmation"

    async def run(self, dispatcher, tracker: Tracker, domain):
        ranking = tracker.latest_message.get("intent_ranking") or []
        buttons = []
        for entry in ranking:
            intent = entry.get("name")
            label = INTENT_LABELS.get(intent)
            if label and len(buttons) < 3:
                buttons.append({"title": label, "payload": f"/{intent}"})
        buttons.append({"title": "Bukan semuanya", "payload": "/out_of_scope"})
        dispatcher.utter_message(response="utter_ask_affirmation", buttons=buttons)
        return []

