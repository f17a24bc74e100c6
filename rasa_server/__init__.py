"""Rasa as we run it: stock Rasa 3.6 with the measured speed patches of rasa_server/patches/
first (RASA_PATCHES selects them)."""
