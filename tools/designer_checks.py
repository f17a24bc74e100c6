"""The designers' checks: what `rasa data validate` and `rasa train` let pass in silence.

    python -m tools.designer_checks validate   rasa data validate, its expected warnings in one
                                               line, then every response reachable (make validate)
    python -m tools.designer_checks responses  only the reachability of the responses
    python -m tools.designer_checks stories    every step of data/stories predicted by the trained
                                               model (make check-stories, run by make test)

A response is reachable when a rule, a learned story, a form's question, one of Rasa's default
actions or our Python (an action, a channel, the officers' side) can send it. Stories count only
when config.yml has a policy that learns from them: with the RulePolicy alone they are ignored.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PYTHON_FOLDERS = ("actions", "backend", "rasa_server", "rest", "whatsapp")
STORY_POLICIES = {"MemoizationPolicy", "AugmentedMemoizationPolicy", "TEDPolicy"}
# Responses that Rasa's own default actions send (rasa/core/actions/action.py).
DEFAULT_ACTION_RESPONSES = {"utter_default", "utter_ask_rephrase", "utter_ask_affirmation"}
NOT_USED = re.compile(r"The utterance '([^']+)' is not used in any story or rule\.")


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _steps(files, key: str) -> set[str]:
    actions = set()
    for path in files:
        for block in _load(path).get(key) or []:
            for step in block.get("steps") or []:
                if isinstance(step, dict) and "action" in step:
                    actions.add(step["action"])
    return actions


def python_names(folders=PYTHON_FOLDERS, root: Path = ROOT) -> tuple[set[str], set[str]]:
    """String literals of our Python, and the prefixes of f-strings such as f"utter_x_{key}"."""
    literals, prefixes = set(), set()
    for folder in folders:
        for path in (root / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    literals.add(node.value)
                elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
                    head = node.values[0].value
                    if isinstance(head, str) and head.startswith("utter_"):
                        prefixes.add(head)
    return literals, prefixes


def unreachable_responses(root: Path = ROOT, config: dict | None = None, domain: dict | None = None) -> list[str]:
    domain = domain if domain is not None else _load(root / "domain.yml")
    config = config if config is not None else _load(root / "config.yml")
    data = root / "data"
    sent = _steps(sorted(data.rglob("*.yml")), "rules")
    if {p.get("name") for p in config.get("policies") or []} & STORY_POLICIES:
        sent |= _steps(sorted(data.rglob("*.yml")), "stories")
    actions = {a if isinstance(a, str) else next(iter(a)) for a in domain.get("actions") or []}
    for form in (domain.get("forms") or {}).values():
        for slot in form.get("required_slots") or []:
            if f"action_ask_{slot}" not in actions:  # Rasa asks with the response itself
                sent.add(f"utter_ask_{slot}")
    literals, prefixes = python_names(root=root)
    names = list(domain.get("responses") or {})
    missing = []
    for name in names:
        if name in sent or name in literals or name in DEFAULT_ACTION_RESPONSES:
            continue
        if name.startswith("utter_faq/") and "utter_faq" in sent:
            continue
        # f"utter_ticket_status_{status}" for status in ("diterima", ...): the key is a literal too
        if any(name.startswith(p) and name[len(p):] in literals for p in prefixes):
            continue
        missing.append(name)
    return missing


# "[booster]{"entity": "dose", ...}" and the short form "[booster](dose)"
ANNOTATION = re.compile(r'\]\{\s*"entity"\s*:\s*"([^"]+)"|\]\(([A-Za-z_][\w-]*)(?::[^)]*)?\)')


def entities_by_intent(root: Path = ROOT) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((root / "data").rglob("*.yml")):
        for block in _load(path).get("nlu") or []:
            if "intent" in block:
                names = {a or b for a, b in ANNOTATION.findall(block.get("examples") or "")}
                found.setdefault(block["intent"].split("/", 1)[0], set()).update(names)
    return found


def unmatched_story_steps(root: Path = ROOT, domain: dict | None = None) -> list[str]:
    """Story steps that live messages will not match. A story step matches a message only with
    the same entities; an intent whose examples carry entities ("booster" -> dose) makes the
    live message differ from a step that names none, so the story's next turn is never
    recalled. Flagged when a later answer in the story depends on it (its intent starts no rule)
    and the intent does not ignore its entities (`use_entities: []` in domain.yml)."""
    domain = domain if domain is not None else _load(root / "domain.yml")
    ignoring = set()
    for entry in domain.get("intents") or []:
        if isinstance(entry, dict):
            name, options = next(iter(entry.items()))
            if (options or {}).get("use_entities") == []:
                ignoring.add(name)
    rule_starts = set()
    stories = []
    for path in sorted((root / "data").rglob("*.yml")):
        data = _load(path)
        for rule in data.get("rules") or []:
            first = next((s for s in rule.get("steps") or [] if isinstance(s, dict)), {})
            if "intent" in first and not rule.get("condition"):
                rule_starts.add(first["intent"])
        stories += [(path, story) for story in data.get("stories") or []]
    carried = entities_by_intent(root)
    found = []
    for path, story in stories:
        steps = [s for s in story.get("steps") or [] if isinstance(s, dict)]
        for i, step in enumerate(steps):
            intent = step.get("intent")
            if not intent or intent in ignoring or step.get("entities") or not carried.get(intent):
                continue
            later = next((s["intent"] for s in steps[i + 1:] if "intent" in s), None)
            if later is not None and later not in rule_starts:
                found.append(f"{path.relative_to(root)}: story '{story.get('story')}', intent {intent} "
                             f"(its examples carry {', '.join(sorted(carried[intent]))}), then {later}")
    return found


def check_responses() -> int:
    missing = unreachable_responses()
    if missing:
        print("responses nothing can send (no rule, learned story, form question or Python sends them; "
              f"a typo in a step?): {', '.join(missing)}")
        return 1
    return 0


def validate(argv: list[str]) -> int:
    """rasa data validate, with the warnings about responses that actions send summarised."""
    done = subprocess.run([sys.executable, "-m", "rasa", "data", "validate", "--fail-on-warnings", *argv],
                          cwd=ROOT, capture_output=True, text=True)
    expected = []
    for line in (done.stdout + done.stderr).splitlines():
        found = NOT_USED.search(line)
        if found:
            expected.append(found.group(1))
        elif "Processed story blocks" not in line and line.strip():
            print(line)
    missing = unreachable_responses()
    if expected:
        print(f"{len(set(expected) - set(missing))} responses are sent by actions, forms or channels rather "
              "than by a rule or story: expected, each checked by tools/designer_checks.py")
    code = check_responses()
    unmatched = unmatched_story_steps()
    if unmatched:
        print("story steps that messages with an entity will not match: add `use_entities: []` to "
              "the intent in domain.yml, or the entities to the step:\n  " + "\n  ".join(unmatched))
        code = 1
    return done.returncode or code


def stories(argv: list[str]) -> int:
    """Every story step predicted by the trained model: a story the policies did not learn fails."""
    parser = argparse.ArgumentParser(prog="designer_checks stories")
    parser.add_argument("--stories", default="data/stories")
    parser.add_argument("--model", default="models/current.tar.gz")
    parser.add_argument("--out", default="results/stories")
    args = parser.parse_args(argv)
    if not any(Path(ROOT, args.stories).rglob("*.yml")) and not Path(ROOT, args.stories).is_file():
        print(f"no stories in {args.stories}")
        return 0
    done = subprocess.run([sys.executable, "-m", "rasa_server", "test", "core", "--model", args.model,
                           "--stories", args.stories, "--fail-on-prediction-errors", "--out", args.out],
                          cwd=ROOT, capture_output=True, text=True)
    if done.returncode == 0:
        print(f"every step of the stories in {args.stories} is predicted by {args.model}")
        return 0
    output = "\n".join(line for line in (done.stdout + done.stderr).splitlines()
                        if "it/s" not in line and "Progress:" not in line)  # no progress bars
    start = output.find("WrongPredictionException")
    print(output[start:] if start >= 0 else output[-3000:])
    print(f"a story step in {args.stories} is not what the trained model predicts: the step marked "
          "'# predicted: ...' above. Retrain (make train) after changing stories; if it still fails, "
          "a rule wins over the story, or the story contradicts another one (docs/designing.md).")
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command, rest = (argv[0], argv[1:]) if argv else ("validate", [])
    if command == "validate":
        return validate(rest)
    if command == "responses":
        return check_responses()
    if command == "stories":
        return stories(rest)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
