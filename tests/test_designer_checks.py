"""Mistakes in the YAML that `rasa data validate` lets pass, each tried for real (docs/designing.md).

An FAQ topic without an answer (or with a misspelt one) trains without a word and is then never
answered; an intent listed in the domain without examples, or an entity annotated in examples but
not declared, only warns or says nothing. These checks fail `make test` instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = yaml.safe_load((ROOT / "domain.yml").read_text(encoding="utf-8"))
# "[booster]{"entity": "dose", ...}" and the short form "[booster](dose)"
ANNOTATION = re.compile(r'\]\{\s*"entity"\s*:\s*"([^"]+)"|\]\(([A-Za-z_][\w-]*)(?::[^)]*)?\)')


def nlu_files() -> list[tuple[Path, dict]]:
    return [(path, yaml.safe_load(path.read_text(encoding="utf-8")) or {})
            for path in sorted((ROOT / "data" / "nlu").glob("*.yml"))]


def examples_by_intent() -> dict[str, str]:
    found: dict[str, str] = {}
    for _, data in nlu_files():
        for block in data.get("nlu") or []:
            if "intent" in block:
                found[block["intent"]] = found.get(block["intent"], "") + (block.get("examples") or "")
    return found


def responses() -> set[str]:
    names = set(DOMAIN.get("responses") or {})
    for _, data in nlu_files():
        names |= set(data.get("responses") or {})
    return names


def test_every_faq_topic_has_an_answer_and_every_answer_a_topic():
    topics = {name.split("/", 1)[1] for name in examples_by_intent() if name.startswith("faq/")}
    answers = {name.split("/", 1)[1] for name in responses() if name.startswith("utter_faq/")}
    assert sorted(topics - answers) == [], "FAQ topics without an utter_faq/<topic> answer (data/nlu/faq.yml)"
    assert sorted(answers - topics) == [], "utter_faq/<topic> answers without questions (check the spelling)"


def test_every_intent_of_the_domain_has_examples():
    intents = [i if isinstance(i, str) else next(iter(i)) for i in DOMAIN["intents"]]
    have = {name.split("/", 1)[0] for name in examples_by_intent()}
    assert sorted(set(intents) - have) == [], "intents in domain.yml without examples in data/nlu/"


def test_every_annotated_entity_is_declared():
    declared = {e if isinstance(e, str) else next(iter(e)) for e in DOMAIN.get("entities") or []}
    used: dict[str, str] = {}
    for name, examples in examples_by_intent().items():
        for match in ANNOTATION.finditer(examples):
            used.setdefault(match.group(1) or match.group(2), name)
    undeclared = {entity: intent for entity, intent in used.items() if entity not in declared}
    assert undeclared == {}, "entities annotated in examples (entity: first intent) but not in domain.yml"
