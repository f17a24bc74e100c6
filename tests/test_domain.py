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
    files = list((ROOT / "actions").glob("*.py")) + list((ROOT / "data").rglob("*.yml"))
    return "\n".join(path.read_text() for path in files)


def test_responses_sent_by_actions_exist():
    text = sources()
    used = set(re.findall(r'response="(utter_[a-z_]+)"', text))
    used |= {f"utter_new_value_{field}" for field in ("name", "email", "phone")}  # built from the field
    used.discard("utter_new_value_")
    missing = sorted(used - set(DOMAIN["responses"]))
    assert not missing, f"responses used by actions but not in domain.yml: {missing}"


def test_every_response_is_used():
    text = sources()
    asked_by_forms = {f"utter_ask_{slot}" for form in DOMAIN["forms"].values() for slot in form["required_slots"]}
    built = {f"utter_new_value_{field}" for field in ("name", "email", "phone")}
    defaults = {"utter_ask_rephrase", "utter_default", "utter_ask_affirmation"}  # Rasa's fallback actions
    unused = [name for name in DOMAIN["responses"]
              if name not in asked_by_forms | built | defaults and name not in text]
    assert not unused, f"responses nothing sends: {unused}"


def test_every_custom_action_is_registered():
    text = "\n".join(p.read_text() for p in (ROOT / "actions").glob("*.py"))
    for entry in DOMAIN["actions"]:
        action = entry if isinstance(entry, str) else next(iter(entry))
        assert f'return "{action}"' in text, action
