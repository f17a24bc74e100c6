"""docs/security.md and docs/platform.md name the tests that prove their claims: each test they
name exists, so a renamed or deleted test cannot leave a claim standing without its proof."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def defined_tests() -> set[str]:
    return {name for path in ROOT.joinpath("tests").rglob("*.py")
            for name in re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M)}


@pytest.mark.parametrize("doc", ["docs/security.md", "docs/platform.md"])
def test_every_test_a_doc_names_exists(doc):
    named = set(re.findall(r"`(test_\w+)`", (ROOT / doc).read_text()))
    assert len(named) >= (40 if doc.endswith("security.md") else 4)
    assert not named - defined_tests(), f"{doc} names tests that do not exist"


def test_every_threat_names_its_tests():
    text = (ROOT / "docs" / "security.md").read_text()
    table = text.split("## Threat model", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| who", "| ---"))]
    assert len(rows) >= 15
    for row in rows:
        assert re.search(r"`test_\w+`", row.rsplit("|", 2)[1]), f"a threat without its test: {row[:80]}"
