"""rasa_server/patches/concrete_function.py and sparse_features.py: the NLU through the concrete
function, with the sparse features joined directly, parses as Rasa does."""

from __future__ import annotations

import pytest
from rasa.shared.nlu.training_data.features import Features
from rasa.utils.tensorflow.models import RasaModel

from patches_support import UNCACHED_TEXTS, load_agent, parses
from rasa_server import patches
from rasa_server.patches import sparse_features

ORIGINAL_RASA_PREDICT = RasaModel._rasa_predict


ORIGINAL_COMBINE_SPARSE = Features._combine_sparse_features


@pytest.fixture(scope="module")
def installed():
    patches.install(["concrete_function", "sparse_features"])
    yield
    patches.uninstall()


@pytest.fixture(scope="module")
def agent():
    return load_agent()


def test_nlu_through_the_concrete_function_and_joined_features_parses_as_rasa(installed, agent, monkeypatch):
    """Every message parsed with DIET and the FAQ selector called through their concrete
    functions and the sparse features joined directly, and Rasa's way: the same intents, rankings
    and confidences to the last bit, entities and FAQ answers; and the tf.function's own lookup
    was not used once the concrete function was known."""
    from tensorflow.python.eager.polymorphic_function.polymorphic_function import Function

    # The last two: FAQ questions of data/nlu/faq.yml in other words, so that the selector runs.
    texts = UNCACHED_TEXTS + ["pertanyaan: vaksin booster itu apa sih?", "sertifikat ini bisa dipakai di luar negeri ga?",
                             "kenapa sertifikat vaksin saya belum muncul juga?"]
    with monkeypatch.context() as rasas_way:
        rasas_way.setattr(RasaModel, "_rasa_predict", ORIGINAL_RASA_PREDICT)
        rasas_way.setattr(Features, "_combine_sparse_features", ORIGINAL_COMBINE_SPARSE)
        expected = parses(agent, texts)
    # The concrete functions are kept after a call of each network: DIET's for every message,
    # the FAQ selector's only for a message classified as faq (nlu_components/faq_selector.py).
    parses(agent, [texts[0]] + [text for text, parsed in zip(texts, expected) if parsed["intent"]["name"] == "faq"][:1])
    lookups = []
    original_call = Function.__call__

    def counted(self, *args, **kwargs):
        lookups.append(self)
        return original_call(self, *args, **kwargs)

    monkeypatch.setattr(Function, "__call__", counted)
    assert parses(agent, texts) == expected
    assert lookups == []
    assert any(parsed["intent"]["name"] == "faq" and parsed["response_selector"]["faq"]["response"]["intent_response_key"]
               for parsed in expected)  # the FAQ selector's network ran too
    assert any(parsed["entities"] for parsed in expected)


@pytest.mark.parametrize("dtypes", [("float32", "float32"), ("float64", "float32"), ("int64", "float32"),
                                    ("float32", "int32")])
def test_two_coo_matrices_join_as_scipys_hstack_joins_them(dtypes):
    import numpy as np
    import scipy.sparse

    random = np.random.default_rng(7)
    for rows, left_cols, right_cols, density in [(1, 5, 3, 0.5), (7, 40, 900, 0.05), (3, 4, 2, 0.0),
                                                 (12, 70000, 40000, 0.00005), (4, 0, 6, 0.3)]:
        left = scipy.sparse.random(rows, left_cols, density, format="coo", dtype=dtypes[0], random_state=random)
        right = scipy.sparse.random(rows, right_cols, density, format="coo", dtype=dtypes[1], random_state=random)
        right.row = right.row.astype(np.int64)  # index arrays of another dtype than left's
        expected = scipy.sparse.hstack([left, right])
        joined = sparse_features.hstack_coo(left, right)
        assert joined.format == expected.format == "coo"
        assert joined.shape == expected.shape and joined.dtype == expected.dtype
        for part in ("data", "row", "col"):
            assert getattr(joined, part).dtype == getattr(expected, part).dtype
            assert np.array_equal(getattr(joined, part), getattr(expected, part))
