"""The project's own NLU components."""

import pytest
from rasa.shared.nlu.training_data.message import Message

from nlu_components.menu_numbers import MenuNumberClassifier

MENU = {1: "download_certificate", 2: "check_vaccination_status", 3: "change_personal_info"}


def classify(text: str) -> Message:
    message = Message(data={"text": text, "intent": {"name": "nlu_fallback", "confidence": 0.4},
                            "intent_ranking": [{"name": "check_vaccination_status", "confidence": 0.4}]})
    return MenuNumberClassifier({"menu": MENU}).process([message])[0]


@pytest.mark.parametrize("text, intent", [
    ("1", "download_certificate"), (" 2 ", "check_vaccination_status"), ("menu 3", "change_personal_info"),
    ("Pilih 2", "check_vaccination_status"), ("no. 1", "download_certificate"), ("3.", "change_personal_info"),
])
def test_menu_numbers_become_their_intent(text, intent):
    message = classify(text)
    assert message.get("intent") == {"name": intent, "confidence": 1.0}
    assert message.get("intent_ranking")[0]["name"] == intent
    assert [r["name"] for r in message.get("intent_ranking")].count(intent) == 1


@pytest.mark.parametrize("text", ["4", "12", "dosis 2", "2 kali", "081234567001", "", "menu"])
def test_anything_else_is_left_alone(text):
    assert classify(text).get("intent")["name"] == "nlu_fallback"
