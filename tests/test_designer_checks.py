"""Mistakes in the YAML that `rasa data validate` lets pass, each tried for real (docs/designing.md).

An FAQ topic without an answer (or with a misspelt one) trains without a word and is then never
answered; an intent listed in the domain without examples, or an entity annotated in examples but
not declared, only warns or says nothing. These checks fail `make test` instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
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


# --- issue 17: what is silently ignored (tools/designer_checks.py, run by make validate/test) ---

def run_checks(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
           "SQLALCHEMY_SILENCE_UBER_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "tools.designer_checks", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_every_response_is_reachable_by_a_policy_or_an_action():
    from tools.designer_checks import unreachable_responses

    assert unreachable_responses() == []


def test_a_response_nothing_sends_is_reported():
    from tools.designer_checks import unreachable_responses

    domain = {**DOMAIN, "responses": {**DOMAIN["responses"], "utter_orphan": [{"text": "Halo"}]}}
    assert unreachable_responses(domain=domain) == ["utter_orphan"]


def test_a_response_only_in_stories_is_unreachable_without_a_policy_that_learns_them():
    """With the RulePolicy alone (as before issue 17) stories are ignored, and so is their response."""
    from tools.designer_checks import unreachable_responses

    rules_only = {"policies": [{"name": "RulePolicy"}]}
    assert unreachable_responses(config=rules_only) == ["utter_anything_else"]


def test_validate_says_the_expected_warnings_in_one_line():
    done = run_checks("validate")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "is not used in any story or rule" not in done.stdout
    summary = [line for line in done.stdout.splitlines() if "rather than by a rule or story" in line]
    assert len(summary) == 1 and re.match(r"\d+ responses are sent by actions", summary[0])


def test_a_story_step_the_trained_model_does_not_predict_fails(tmp_path):
    """A story that contradicts what the model learned (greet answered with thanks) fails the
    check, where `rasa data validate` and `rasa train` say nothing."""
    story = tmp_path / "stories.yml"
    story.write_text('version: "3.1"\nstories:\n  - story: greeting answered with thanks\n    steps:\n'
                     '      - intent: greet\n      - action: utter_thank\n', encoding="utf-8")
    done = run_checks("stories", "--stories", str(story), "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    assert "# predicted: utter_greet" in done.stdout and "not what the trained model predicts" in done.stdout
    # data/stories itself passes: `make check-stories`, run by `make test` after pytest


def test_a_story_step_that_messages_with_an_entity_will_not_match_is_reported():
    """"kapan bisa booster?" carries the entity dose: without `use_entities: []` on its intent,
    the live message differs from the story's step and "ya" after it got the menu instead of
    the status (found by tests/test_designers_guide.py; `rasa test core` does not see it)."""
    from tools.designer_checks import unmatched_story_steps

    assert unmatched_story_steps() == []
    plain = {**DOMAIN, "intents": [i if isinstance(i, str) else next(iter(i)) for i in DOMAIN["intents"]]}
    found = unmatched_story_steps(domain=plain)
    assert found and all("ask_booster_timing (its examples carry dose)" in line for line in found)
