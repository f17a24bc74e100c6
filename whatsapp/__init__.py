"""The WhatsApp Cloud API channel: Meta's webhook in, Graph API messages out (see docs/whatsapp.md)."""
