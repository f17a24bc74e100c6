"""The project's own NLU components."""

from pathlib import Path

import pytest
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.nlu.tokenizers.whitespace_tokenizer import WhitespaceTokenizer
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from nlu_components.menu_numbers import MenuNumberClassifier
from nlu_components.slang_normalizer import SlangNormalizer, normalise_word, read_lexicon

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


# --- the slang normaliser -----------------------------------------------------------------------

LEXICON_FILE = Path(__file__).resolve().parent.parent / "nlu_components" / "slang_lexicon.yml"
LEXICON = read_lexicon(LEXICON_FILE)


@pytest.mark.parametrize("word, standard", [
    ("gmn", "bagaimana"), ("sy", "saya"), ("blm", "belum"), ("udh", "sudah"), ("ga", "tidak"),
    ("sertif", "sertifikat"), ("Sertif", "sertifikat"), ("dwnload", "download"), ("tlg", "tolong"),
    ("masuk2", "masuk"),                       # reduplication written with a 2
    ("makasihh", "terimakasih"), ("iyaa", "iya"), ("bangeeet", "banget"),  # stretched words
    ("kodenya", "kode"), ("sertifikatku", "sertifikat"), ("otpnya", "otp"),  # suffixes
    ("dikirim", "kirim"), ("ngecek", "cek"),   # prefixes
    ("certificate", "sertifikat"),             # code-mixing
])
def test_words_get_their_standard_form(word, standard):
    assert normalise_word(word, LEXICON) == standard


@pytest.mark.parametrize("word", [
    "cara", "maaf", "bertanya", "punya", "diri", "ke2", "2", "081234567001", "3174011501900001",
    "no",  # English "no" is a refusal, not "nomor"
    "kak", "dong", "min",
])
def test_other_words_are_left_alone(word):
    assert normalise_word(word, LEXICON) is None


def test_a_word_belongs_to_one_standard_form(tmp_path):
    clash = tmp_path / "lexicon.yml"
    clash.write_text("tidak: [ga]\nganti: [ga]\n")
    with pytest.raises(ValueError, match="'ga'"):
        read_lexicon(clash)


def tokenized(text: str) -> Message:
    message = Message(data={"text": text})
    WhitespaceTokenizer(WhitespaceTokenizer.get_default_config()).process([message])
    return message


def test_only_lemmas_change_and_the_lexicon_travels_with_the_model(tmp_path):
    storage = LocalModelStorage(tmp_path)
    resource = Resource("slang")
    config = {"lexicon": str(LEXICON_FILE)}
    trained = SlangNormalizer.create(config, storage, resource, None)
    trained.train(TrainingData([tokenized("gmn cara download")]))

    # A model does not read the lexicon file again: what training saw is what it uses.
    loaded = SlangNormalizer.load({"lexicon": str(tmp_path / "missing.yml")}, storage, resource, None)
    message = loaded.process([tokenized("otp nya ga masuk2, tlg kirim ke 0812-3456-7001")])[0]
    tokens = message.get("text_tokens")
    assert [t.lemma for t in tokens] == ["otp", "nya", "tidak", "masuk", "tolong", "kirim", "ke",
                                         "0812-3456-7001"]
    assert [t.text for t in tokens] == ["otp", "nya", "ga", "masuk2", "tlg", "kirim", "ke", "0812-3456-7001"]
    text = message.get("text")
    assert all(text[t.start:t.end] == t.text for t in tokens)


def test_editing_the_lexicon_retrains_the_model(tmp_path):
    lexicon = tmp_path / "lexicon.yml"
    lexicon.write_text("tidak: [ga]\n")
    before = SlangNormalizer.fingerprint_addon({"lexicon": str(lexicon)})
    lexicon.write_text("tidak: [ga, gak]\n")
    assert SlangNormalizer.fingerprint_addon({"lexicon": str(lexicon)}) != before


# --- the digit entities -------------------------------------------------------------------------

from nlu_components.digit_entities import DigitEntityExtractor, extract_digits, load_patterns  # noqa: E402

PATTERNS = load_patterns(Path(__file__).resolve().parent.parent / "data" / "nlu" / "lookups.yml")


def found(text: str) -> list[tuple[str, str]]:
    return [(e["entity"], e["value"]) for e in extract_digits(text, PATTERNS)]


@pytest.mark.parametrize("text, expected", [
    ("nik saya 3201 1547 0762 0005 ya", [("nik", "3201 1547 0762 0005")]),
    ("NIK: 3201-1547-0762-0005", [("nik", "3201-1547-0762-0005")]),
    ("3201.1547.0762.0005", [("nik", "3201.1547.0762.0005")]),
    ("3578030801000004", [("nik", "3578030801000004")]),          # "0801000004" inside: no phone
    ("no wa +62 821-9876-5432", [("phone_number", "+62 821-9876-5432")]),
    ("62 812 3456 7001", [("phone_number", "62 812 3456 7001")]),
    ("hp 0812.3456.7001", [("phone_number", "0812.3456.7001")]),
    ("kode 739 201 udah expired", [("otp_code", "739 201")]),
    ("otpnya 71 42 85", [("otp_code", "71 42 85")]),
    ("kodenya581920", [("otp_code", "581920")]),                   # glued to its word
    ("kode:123456", [("otp_code", "123456")]),
    ("tiket saya 000457 gimana", []),                              # a ticket number, not a code
    ("cek laporan no 004512", []),
    ("bayar Rp 150000?", []),
    ("PL-2026-000123", []),
    ("nik 3201154707620005 no hp 081234567890 kode 123456",
     [("nik", "3201154707620005"), ("phone_number", "081234567890"), ("otp_code", "123456")]),
    ("+65 8123 4567", []),
])
def test_digit_entities_are_found_whole_and_only_once(text, expected):
    assert found(text) == expected


def test_digit_entities_replace_what_diet_guessed(tmp_path):
    storage = LocalModelStorage(tmp_path)
    extractor = DigitEntityExtractor.create({}, storage, Resource("digits"), None)
    extractor.train(TrainingData(regex_features=[{"name": name, "pattern": pattern}
                                                 for name, pattern in PATTERNS.items()]))
    extractor = DigitEntityExtractor.load({}, storage, Resource("digits"), None)
    text = "nomor 0812 3456 7890 tiket 000457 dosis 2"
    diet = [{"entity": "phone_number", "start": 6, "end": 10, "value": "0812", "extractor": "DIETClassifier"},
            {"entity": "otp_code", "start": 11, "end": 20, "value": "3456 7890", "extractor": "DIETClassifier"},
            {"entity": "ticket_id", "start": 27, "end": 33, "value": "000457", "extractor": "DIETClassifier"},
            {"entity": "dose", "start": 34, "end": 41, "value": "2", "extractor": "DIETClassifier"}]
    message = extractor.process([Message(data={"text": text, "entities": diet})])[0]
    assert [(e["entity"], e["value"], e["extractor"]) for e in message.get("entities")] == [
        ("phone_number", "0812 3456 7890", "DigitEntityExtractor"),
        ("ticket_id", "000457", "DIETClassifier"),
        ("dose", "2", "DIETClassifier")]
    # "otp" before the number outweighs DIET's ticket; with no telling word, DIET's ticket stays
    for text, expected in [("ini otp nya 129774 min", [("otp_code", "129774", "DigitEntityExtractor")]),
                           ("129774", [("ticket_id", "129774", "DIETClassifier")])]:
        start = text.index("129774")
        ticket = {"entity": "ticket_id", "start": start, "end": start + 6, "value": "129774",
                  "extractor": "DIETClassifier"}
        message = extractor.process([Message(data={"text": text, "entities": [ticket]})])[0]
        assert [(e["entity"], e["value"], e["extractor"]) for e in message.get("entities")] == expected


# --- dose spans ---------------------------------------------------------------------------------

from nlu_components.dose_spans import fix_doses  # noqa: E402


def dose(text: str, word: str) -> dict:
    start = text.index(word)
    return {"entity": "dose", "start": start, "end": start + len(word), "value": word, "extractor": "DIETClassifier"}


@pytest.mark.parametrize("text, word, expected", [
    ("sertifikat dosis kedua belum muncul", "kedua", ["dosis kedua"]),
    ("cek dosis ke-2 saya", "ke-2", ["dosis ke-2"]),
    ("after the second dose", "second", ["second dose"]),
    ("yang booster aja", "booster", ["booster"]),               # nothing to widen
    ("dosis 2 aja", "dosis 2", ["dosis 2"]),                    # already whole
    ("tercatat 2 dosis aja", "2", []),                          # a count, not the second dose
    ("sudah 3 bulan belum terbit", "3", []),
    ("aktif 24 jam?", "24", []),
    ("berapa dosis yang tercatat", "dosis", []),
    ("dosis 2 tgl 12/3", "12/3", []),                           # a date, not a dose
    ("bot nya available 24/7 ga", "24/7", []),
    ("vaksin jam 10.30", "10.30", []),
    ("divaksin 12-03-2021", "12-03-2021", []),
])
def test_doses_follow_the_labelling_rule(text, word, expected):
    other = {"entity": "person_name", "start": 0, "end": 3, "value": text[:3], "extractor": "DIETClassifier"}
    fixed = fix_doses(text, [other, dose(text, word)])
    assert fixed[0] == other
    assert [e["value"] for e in fixed[1:]] == expected
    assert all(e["start"] >= 0 and text[e["start"]:e["end"]] == e["value"] for e in fixed[1:])
