"""Reading the short answers citizens type inside a menu: a dose, a field, yes/no, a person."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import yaml

from backend.identifiers import InvalidInput, parse_nik

_WORDS = re.compile(r"[a-z0-9]+")

NLU_DATA = Path(__file__).resolve().parents[1] / "data" / "nlu"


def nlu_synonyms(folder: Path = NLU_DATA) -> dict[str, list[str]]:
    """Each synonym's value and its words (lowercase), from the NLU data's `synonym:` blocks."""
    found: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.yml")):
        for block in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("nlu") or []:
            if "synonym" in block:
                names = [line.strip()[1:].strip().lower() for line in (block.get("examples") or "").splitlines()
                         if line.strip().startswith("-")]
                found.setdefault(str(block["synonym"]), []).extend(names)
    return found


SYNONYMS = nlu_synonyms()
# The dose and field words are the NLU's synonyms (data/nlu/lookups.yml): what the entity
# extractor normalises is also what a menu reads. A dose is read word by word ("dosis ke-2").
DOSE_WORDS = {name: int(dose) for dose in ("1", "2", "3")
              for name in [dose, *SYNONYMS.get(dose, [])] if _WORDS.fullmatch(name)}
# Fields checked in this order, so "tanggal lahir" wins over "nama" (these are data values).
FIELD_ORDER = ("birth_date", "nik", "phone", "email", "name")
FIELD_WORDS = [(field, tuple(dict.fromkeys(SYNONYMS.get(field, [])))) for field in FIELD_ORDER]

SLANG_LEXICON = Path(__file__).resolve().parents[1] / "nlu_components" / "slang_lexicon.yml"


def lexicon_variants(word: str, path: Path = SLANG_LEXICON) -> set[str]:
    """The ways of writing `word` that the NLU's slang lexicon lists ("mboten", "kagak" for tidak)."""
    lexicon = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {str(variant).lower() for variant in lexicon.get(word) or []}


YES = {"ya", "iya", "y", "yes", "benar", "betul", "ok", "oke", "okay", "setuju", "lanjut", "simpan",
       "yup", "yap", "sip", "boleh", "/affirm"}
NO = {"tidak", "tdk", "ga", "gak", "nggak", "enggak", "no", "bukan", "jangan", "batal", "n",
      "salah", "/deny"} | lexicon_variants("tidak")
# The intent of an answer to a yes/no question, before its words: "gak jadi" is a cancel
# anywhere else, and here it means no.
INTENT_ANSWERS = {"affirm": True, "deny": False, "cancel": False}


# Words around a name that say nothing about who: "yang rina", "untuk anak saya budi".
FILLER = {"yang", "untuk", "anak", "saya", "sy", "punya", "atas", "nama", "data", "si", "ibu", "bapak",
          "pak", "bu", "kak", "dong", "aja", "saja", "sih", "dek", "adik", "istri", "suami", "buat"}


def words(text: str) -> list[str]:
    return _WORDS.findall((text or "").lower())


def parse_dose(text: str) -> int | None:
    """1, 2 or 3 from "dosis 2", "yang kedua", "booster", "3"; None when unclear."""
    found = {DOSE_WORDS[w] for w in words(text) if w in DOSE_WORDS}
    return found.pop() if len(found) == 1 else None


# One pattern per field, any of its words as a whole word: built once, not per message.
FIELD_PATTERNS = [(field, re.compile(r"\b(?:" + "|".join(map(re.escape, names)) + r")\b"))
                  for field, names in FIELD_WORDS]


def parse_field(text: str) -> str | None:
    lowered = " ".join(words((text or "").replace("-", "")))
    raw = (text or "").lower()
    for field, pattern in FIELD_PATTERNS:
        if pattern.search(lowered) or pattern.search(raw):
            return field
    return None


def answer_yes_no(intent: str | None, text: str) -> bool | None:
    """The answer to a yes/no question from the message's intent, else from its first word."""
    answer = INTENT_ANSWERS.get(intent or "")
    return parse_yes_no(text) if answer is None else answer


def parse_yes_no(text: str) -> bool | None:
    tokens = (text or "").lower().split()
    if not tokens:
        return None
    first = tokens[0].strip(".,!?")
    if first in YES:
        return True
    if first in NO:
        return False
    return None


def choose_person(text: str, people: Sequence) -> object | None:
    """The one person meant by a list number, a NIK, or (part of) a name; None if none or several."""
    text = (text or "").strip()
    tokens = words(text)
    if len(tokens) == 1 and tokens[0].isdigit() and len(tokens[0]) <= 2:
        index = int(tokens[0]) - 1
        return people[index] if 0 <= index < len(people) else None
    try:
        nik = parse_nik(text)
    except InvalidInput:
        nik = None
    if nik:
        return next((p for p in people if p.nik == nik), None)
    tokens = [t for t in tokens if t not in FILLER] or tokens
    if not tokens:
        return None
    matches = [p for p in people if set(tokens) <= set(words(p.full_name))]
    if len(matches) == 1:
        return matches[0]
    exact = [p for p in matches if words(p.full_name) == tokens]
    return exact[0] if len(exact) == 1 else None
