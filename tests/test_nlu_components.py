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
