"""OTP delivery through WhatsApp (OTP_SENDER=whatsapp), as an authentication template.

Meta's authentication template with a copy-code button, sent to the number registered for the
account; the limits and rules of backend.otp are unchanged.
"""

from __future__ import annotations

from .graph import SyncGraphClient
from .outbound import otp_template_message
from .settings import WhatsAppSettings


class WhatsAppOtpSender:
    """backend.otp.OtpSender over WhatsApp. The template's text is fixed by Meta (in the
    template's language, with its own validity line), so only the code goes out."""

    def __init__(self, settings: WhatsAppSettings, client: SyncGraphClient | None = None):
        missing = settings.missing_for_sending() + ([] if settings.otp_template else ["WHATSAPP_OTP_TEMPLATE"])
        if missing:
            raise ValueError(f"OTP_SENDER=whatsapp needs {', '.join(missing)}")
        self.settings = settings
        self.client = client or SyncGraphClient(settings)

    @classmethod
    def from_env(cls, env: dict | None = None) -> "WhatsAppOtpSender":
        return cls(WhatsAppSettings.from_env(env))

    def send(self, to: str, code: str, *, ttl_seconds: int, purpose: str) -> None:
        wa_id = to.lstrip("+")  # E.164 without the plus, as WhatsApp ids are written
        self.client.send_message(otp_template_message(
            wa_id, self.settings.otp_template, self.settings.otp_template_language, code))
