"""A WhatsApp chat in the browser that speaks the real protocol to the channel (docs/designing.md)."""
