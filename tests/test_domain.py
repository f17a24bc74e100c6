"""Every response an action sends exists in the domain, and every response is used somewhere.

`rasa data validate` cannot see responses sent by custom actions or asked by forms
(RasaHQ/rasa#4200), so it warns about them; this test is the stricter check in its place.
"""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = yaml.safe_load((ROOT / "domain.yml").read_text())


def sources() -> str:
    files = list((ROOT / "data").rglob("*.yml"))
    for folder in ("actions", "backend", "rasa_server", "rest", "whatsapp"):  # responses read outside a Rasa turn too
        files += list((ROOT / folder).glob("*.py"))
    text = "\n".join(path.read_text() for path in files)
    # names built from a prefix and a key: f"utter_field_label_{field}" for field in (...)
    for prefix, keys in re.findall(r'f"(utter_[a-z_]+_)\{\w+\}"\s*\)?\s*for \w+ in \(([^)]*)\)', text):
        text += "\n" + "\n".join(prefix + key for key in re.findall(r'"(\w+)"', keys))
    return text


def test_responses_sent_by_actions_exist():
    text = sources()
    used = set(re.findall(r'response="(utter_[a-z_]+)"', text))
    used |= {f"utter_new_value_{field}" for field in ("name", "email", "phone")}  # built from the field
    used.discard("utter_new_value_")
    missing = sorted(used - set(DOMAIN["responses"]))
    assert not missing, f"responses used by actions but not in domain.yml: {missing}"


def test_every_response_is_used():
    """Reached by a rule, a story a policy learns, a form, Rasa's defaults or our Python: a response
    named only in a story that no policy learns is not used (tools/designer_checks.py)."""
    from tools.designer_checks import unreachable_responses

    unused = unreachable_responses()
    assert not unused, f"responses nothing sends: {unused}"


def test_every_custom_action_is_registered():
    text = "\n".join(p.read_text() for p in (ROOT / "actions").glob("*.py"))
    for entry in DOMAIN["actions"]:
        action = entry if isinstance(entry, str) else next(iter(entry))
        assert f'return "{action}"' in text, action
