"""rasa_server/patches/nlu_cache.py: parses reused as copies, never for texts with personal data."""

from __future__ import annotations

import pytest
from rasa.core.channels import UserMessage
from rasa.core.processor import MessageProcessor

from rasa_server.patches import nlu_cache


class CountingProcessor:
    """Just what the parse cache uses of a MessageProcessor, counting real parses."""

    def __init__(self, model_filename="model-a.tar.gz"):
        self.model_filename = model_filename
        self.parses = []

    def parse(self, message, tracker, only_output_properties=True):
        self.parses.append(message.text)
        return {"text": message.text, "intent": {"name": "greet", "confidence": 0.99}, "entities": []}


@pytest.fixture
def parse_cache(monkeypatch):
    monkeypatch.setattr(MessageProcessor, "_parse_message_with_graph", CountingProcessor.parse)
    nlu_cache.cache_parses(size=2)
    return MessageProcessor._parse_message_with_graph


def test_parse_cache_reuses_results_for_plain_texts_as_copies(parse_cache):
    processor = CountingProcessor()
    first = parse_cache(processor, UserMessage("halo kak"), None)
    first["intent"]["name"] = "changed by a caller"
    second = parse_cache(processor, UserMessage("halo kak"), None)
    assert processor.parses == ["halo kak"]
    assert second["intent"]["name"] == "greet"
    # Another model: parsed again.
    other = CountingProcessor("model-b.tar.gz")
    parse_cache(other, UserMessage("halo kak"), None)
    assert other.parses == ["halo kak"]


@pytest.mark.parametrize("text", ["081234567001", "kode saya 123456", "ganti email ke a@b.id",
                                  "nik 3171014501900001", "lahir 15/01/90", "12", "PL-2026-000123",
                                  "x" * 81, ""])
def test_parse_cache_never_keeps_personal_data(parse_cache, text):
    processor = CountingProcessor()
    parse_cache(processor, UserMessage(text), None)
    parse_cache(processor, UserMessage(text), None)
    assert processor.parses == [text, text]


def test_parse_cache_keeps_menu_numbers_and_doses(parse_cache):
    processor = CountingProcessor()
    for text in ["2", "dosis 3", "2", "dosis 3"]:
        parse_cache(processor, UserMessage(text), None)
    assert processor.parses == ["2", "dosis 3"]


def test_parse_cache_is_bounded(parse_cache):
    processor = CountingProcessor()
    for text in ["a", "b", "c", "a"]:
        parse_cache(processor, UserMessage(text), None)
    assert processor.parses == ["a", "b", "c", "a"]  # "a" was the oldest of three in a cache of two
