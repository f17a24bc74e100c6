"""Old import path of the JSON helpers, kept for backend/tracker_store.py only until its import
reads `from rasa_server.jsonio import dumps, keep_last, remember_json`. The speed patches live
in rasa_server/patches/."""

from rasa_server.jsonio import dumps, dumps_bytes, keep_last, remember_json, stored_json  # noqa: F401
