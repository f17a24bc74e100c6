"""rasa_server/patches/empty_domain.py: a domain is empty exactly when Rasa says so."""

from __future__ import annotations

import pytest
from rasa.shared.core.domain import Domain

from rasa_server import patches
from tools.stack import ROOT

ORIGINAL_IS_EMPTY = Domain.is_empty


@pytest.fixture(scope="module")
def installed():
    patches.install(["empty_domain"])
    yield
    patches.uninstall()


def test_a_domain_is_empty_exactly_when_rasa_says_so(installed):
    ours = Domain.load(str(ROOT / "domain.yml"))
    for domain in (Domain.empty(), Domain.from_dict({}), ours, Domain.from_dict({"intents": ["greet"]})):
        assert domain.is_empty() == ORIGINAL_IS_EMPTY(domain)
    assert Domain.empty().is_empty() and not ours.is_empty()
