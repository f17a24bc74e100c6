"""Telling a WhatsApp citizen something outside a turn (a ticket resolved, an officer's reply)."""

from __future__ import annotations

from .graph import SyncGraphClient
from .outbound import notice_template_message, text_messages
from .settings import WhatsAppSettings


def send_notification(wa_id: str, text: str, window_open: bool, settings: WhatsAppSettings | None = None,
                      client: SyncGraphClient | None = None) -> None:
    """Inside the 24-hour window a plain message; after it, the notice template (Meta sends
    nothing else then). Raises the Graph API's error if it cannot be sent."""
    settings = settings or WhatsAppSettings.from_env()
    client = client or SyncGraphClient(settings)
    if window_open:
        for payload in text_messages(wa_id, text):
            client.send_message(payload)
    else:
        client.send_message(notice_template_message(
            wa_id, settings.notice_template, settings.otp_template_language, text))
