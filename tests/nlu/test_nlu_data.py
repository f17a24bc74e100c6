"""The NLU data itself: the held-out file stays independent of training, and the digit patterns
(nik, phone_number, otp_code, ticket_id in data/nlu/lookups.yml) match what citizens type and
nothing else. The patterns are DIET's features, and for nik, phone_number and otp_code the
entities themselves (nlu_components/digit_entities.py). The out-of-scope lookup
(data/nlu/oos_lookup.yml) holds none of the service's own words."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")

from rasa.shared.nlu.training_data.loading import load_data  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent
HELD_OUT = ROOT / "tests" / "nlu" / "test_nlu.yml"


@pytest.fixture(scope="module")
def training():
    return load_data(str(ROOT / "data" / "nlu"))


def normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower()).strip(" ?!.,")


def test_the_held_out_file_is_never_training_data(training):
    held_out = load_data(str(HELD_OUT))
    seen = {normalised(m.get("text")) for m in training.nlu_examples}
    assert len(held_out.intent_examples) >= 250
    assert [m.get("text") for m in held_out.nlu_examples if normalised(m.get("text")) in seen] == []


def test_every_intent_and_faq_topic_is_in_the_held_out_file(training):
    held_out = load_data(str(HELD_OUT))
    assert {m.get_full_intent() for m in held_out.intent_examples} == \
           {m.get_full_intent() for m in training.intent_examples}


def find(training, name: str, text: str) -> list[str]:
    pattern = next(r["pattern"] for r in training.regex_features if r["name"] == name)
    return [m.group(0) for m in re.finditer(pattern, text, re.IGNORECASE)]


@pytest.mark.parametrize("name, text, expected", [
    ("nik", "nik 3174011501900001", ["3174011501900001"]),
    ("nik", "3201 0165 1292 0006", ["3201 0165 1292 0006"]),
    ("nik", "3578-0301-0100-0004", ["3578-0301-0100-0004"]),
    ("nik", "320101 651292 0006", ["320101 651292 0006"]),
    ("nik", "081234567001", []),
    ("nik", "31740115019000011", []),            # 17 digits: not a NIK
    ("phone_number", "0812-3456-7001", ["0812-3456-7001"]),
    ("phone_number", "+62 812 3456 7002", ["+62 812 3456 7002"]),
    ("phone_number", "no wa 6281234567003 kak", ["6281234567003"]),
    ("phone_number", "3578030801000004", []),    # "0801000004" inside a NIK
    ("phone_number", "+65 8123 4567", []),       # not an Indonesian number
    ("otp_code", "kodenya 482913", ["482913"]),
    ("otp_code", "482 913", ["482 913"]),
    ("otp_code", "650-142", ["650-142"]),
    ("otp_code", "0812 3456 7001", []),
    ("otp_code", "3174011501900001", []),
    ("otp_code", "1234567", []),
    ("nik", "3201.1547.0762.0005", ["3201.1547.0762.0005"]),
    ("phone_number", "hp 0812.3456.7001", ["0812.3456.7001"]),
    ("phone_number", "62 812 3456 7001", ["62 812 3456 7001"]),
    ("otp_code", "otp 71 42 85", ["71 42 85"]),
    ("otp_code", "Rp 150.000", []),               # an amount
    ("otp_code", "PL-2026-000123", []),           # a ticket reference
    ("otp_code", "PL 2026 000123", []),
    ("ticket_id", "cek PL-2026-000123", ["PL-2026-000123"]),
    ("ticket_id", "tiket pl 2026 000415", ["pl 2026 000415"]),
    ("ticket_id", "PL2026000640", ["PL2026000640"]),
])
def test_digit_patterns(training, name, text, expected):
    assert find(training, name, text) == expected


# The service's own words: a lookup entry marks its word as out of scope wherever it is typed.
OWN_WORDS = {"vaksin", "vaksinasi", "sertifikat", "sertif", "dosis", "booster", "nik", "nomor", "hp",
             "otp", "kode", "email", "nama", "data", "aplikasi", "covid", "puskesmas", "tiket",
             "status", "ganti", "download", "unduh", "pfizer", "sinovac", "astrazeneca", "moderna",
             "kartu vaksin", "tanggal lahir", "certificate", "vaccine"}


def test_the_out_of_scope_lookup_never_names_the_services_own_words(training):
    lookup = next(t for t in training.lookup_tables if t["name"] == "oos_topic")
    entries = [e.strip().lower() for e in lookup["elements"]]
    assert len(entries) >= 100
    assert sorted(set(entries) & OWN_WORDS) == []
    assert len(entries) == len(set(entries))


def test_the_faq_selector_sees_every_featurizer_but_the_out_of_scope_words():
    import yaml

    pipeline = yaml.safe_load((ROOT / "config.yml").read_text())["pipeline"]
    aliases = [c.get("alias") for c in pipeline if c["name"].endswith("Featurizer")]
    selector = next(c for c in pipeline if c["name"].endswith("FaqResponseSelector"))
    assert None not in aliases and len(aliases) == 5
    assert selector["featurizers"] == [a for a in aliases if a != "oos_words"]
