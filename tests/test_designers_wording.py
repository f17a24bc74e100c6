"""Every word a citizen reads lives in domain.yml (issue 17): the Python has none of its own, the
channels and the officers' notifications read the domain's responses, a designer's new intent is
offered in "Maksud Anda:" without Python, and the dose and field words are the NLU's synonyms."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

import pytest
import yaml
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = yaml.safe_load((ROOT / "domain.yml").read_text(encoding="utf-8"))

# Words that mark a string literal as an Indonesian sentence (or a piece of one).
INDONESIAN = {"anda", "sudah", "belum", "silakan", "maaf", "dengan", "untuk", "tidak", "yang", "sertifikat",
              "laporan", "petugas", "pesan", "masih", "dapat", "akan", "ketik", "mohon", "terbit", "diproses",
              "hari", "lalu", "biasanya", "catatan", "pukul", "dibuat", "nomor", "kode", "lebih", "lama",
              "dari", "nama", "ada", "pilih", "saya", "kami", "booster", "dosis", "vaksinasi", "tanggal"}
SQL = re.compile(r"\b(select|insert|update|where)\b", re.IGNORECASE)

# What is still written in Python, and why; anything else Indonesian in Python fails the test.
NOT_CHAT = {
    "actions/server.py": "the certificate download and verification web pages (HTML)",
    "backend/certificates.py": "the PDF certificate's own labels",
    "backend/signing.py": "the QR verifier's verdicts (web page and `make verify-certificate`)",
    "backend/seed.py": "demo data",
}
KNOWN = {
    # what citizens type, understood (not said) by the verification step
    "actions/verified_form.py": {"nomor wa ini", "nomor whatsapp ini", "pakai nomor wa ini", "nomor ini",
                                 "no ini", "pakai nomor ini", "nomor yang ini"},
    # officer-facing: the ticket's description and internal note, never shown to the citizen
    "backend/tickets.py": {"Warga meminta bicara dengan petugas"},
    "backend/officer_desk.py": {"Tiket diambil petugas"},
}


def python_strings(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_citizen_facing_words_in_python():
    found = []
    for folder in ("actions", "backend", "rasa_server", "rest", "whatsapp"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name in NOT_CHAT:
                continue
            for line, value in python_strings(path):
                tokens = re.findall(r"[a-z]+", value.lower())
                if " " in value.strip() and set(tokens) & INDONESIAN and not SQL.search(value) \
                        and value not in KNOWN.get(name, ()):
                    found.append(f"{name}:{line}: {value!r}")
    assert found == [], "citizen-facing Indonesian in Python: move it to a response in domain.yml"


def test_the_channels_and_officer_texts_are_the_domains_responses(backend):
    from actions import wording
    from backend.officer_desk import Notifier, OfficerDesk
    from backend.tickets import Tickets
    from rasa_server import gate
    from rest import channel as rest_channel
    from whatsapp import texts

    said = {name: variations[0]["text"] for name, variations in DOMAIN["responses"].items()}
    assert rest_channel.APOLOGY == texts.APOLOGY == said["utter_channel_unavailable"]
    too_long = said["utter_channel_too_long"].replace("{max_chars}", "2000")
    assert rest_channel.TOO_LONG == texts.TOO_LONG == too_long
    assert texts.UNSUPPORTED == said["utter_channel_unsupported"]
    assert gate.HANDOFF_ACK == said["utter_officer_forwarded"]
    told = []
    desk = OfficerDesk(Tickets(backend.repo, wording.domain()),
                       Notifier(backend.db, backend.repo.clock, lambda *sent: told.append(sent)))
    assert desk.tickets.label("handoff") == said["utter_ticket_category_handoff"]
    backend.db.run(lambda cur: cur.execute(
        "INSERT INTO tickets (reference, category, description, channel, conversation_id, created_at, updated_at)"
        " VALUES ('PL-2026-000001', 'other', 'x', 'whatsapp', '6281234567001', now(), now()),"
        " ('PL-2026-000002', 'handoff', 'x', 'whatsapp', '6281234567001', now(), now())"))
    # an officer's note with braces is passed through as written, not read as a {variable}
    desk.resolve("PL-2026-000001", "rina", "{x} ok")
    assert told[0][1] == "Laporan PL-2026-000001 (Lainnya) sudah selesai ditangani. Catatan petugas: {x} ok"
    assert desk.release("PL-2026-000002", "rina") is not None
    assert told[1][1] == said["utter_officer_released"]


@pytest.fixture
def domain_copy(tmp_path, monkeypatch):
    """domain.yml copied to tmp_path, read by actions.wording instead of the real one."""
    from actions import wording

    copy = tmp_path / "domain.yml"
    copy.write_text((ROOT / "domain.yml").read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(wording, "DOMAIN_FILE", copy)
    wording.responses.cache_clear()
    yield copy
    monkeypatch.undo()
    wording.responses.cache_clear()


def test_a_new_intent_is_offered_in_maksud_anda_without_python(domain_copy):
    from actions import wording
    from actions.actions import ActionAskAffirmation

    text = domain_copy.read_text(encoding="utf-8")
    text = text.replace('''        - title: "Bukan semuanya"''', '''        - title: "Tempat vaksinasi"
          payload: "/ask_vaccination_place"
        - title: "Bukan semuanya"''', 1)
    domain_copy.write_text(text, encoding="utf-8")
    wording.responses.cache_clear()  # importing the actions above read the copy before the edit
    ranking = [{"name": "nlu_fallback", "confidence": 0.5}, {"name": "ask_vaccination_place", "confidence": 0.3},
               {"name": "greet", "confidence": 0.1}, {"name": "show_menu", "confidence": 0.05}]
    tracker = Tracker("c1", {}, {"text": "vaksin dmn", "intent": {"name": "nlu_fallback"}, "entities": [],
                                 "intent_ranking": ranking}, [], False, None, {}, "action_listen")
    dispatcher = CollectingDispatcher()
    asyncio.run(ActionAskAffirmation().run(dispatcher, tracker, {}))
    assert dispatcher.messages[0]["text"] == "Maksud Anda:"
    assert dispatcher.messages[0]["buttons"] == [
        {"title": "Tempat vaksinasi", "payload": "/ask_vaccination_place"},
        {"title": "Lihat menu", "payload": "/show_menu"},
        {"title": "Bukan semuanya", "payload": "/out_of_scope"}]


def test_dose_and_field_words_are_the_nlu_synonyms():
    from actions.parsing import nlu_synonyms, parse_dose, parse_field

    synonyms = nlu_synonyms()
    for dose in ("1", "2", "3"):
        for words in synonyms[dose]:
            assert parse_dose(words) == int(dose), words
    for field in ("name", "phone", "email", "nik", "birth_date"):
        for words in synonyms[field]:
            assert parse_field(words) == field, words
    # the words that once were only in Python are in the NLU data now
    assert "penguat" in synonyms["3"] and "handphone" in synonyms["phone"]


def test_a_synonym_added_to_the_nlu_data_is_read_by_the_actions(tmp_path):
    from actions.parsing import nlu_synonyms

    (tmp_path / "lookups.yml").write_text(
        'version: "3.1"\nnlu:\n- synonym: "3"\n  examples: |\n    - penguat\n    - dosis penguat kedua\n',
        encoding="utf-8")
    assert nlu_synonyms(tmp_path) == {"3": ["penguat", "dosis penguat kedua"]}
