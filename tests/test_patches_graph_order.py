"""rasa_server/patches/graph_order.py: the graphs run in order give what dask gave."""

from __future__ import annotations

import pytest
from rasa.engine.runner.dask import DaskGraphRunner

from patches_support import load_agent, predictions_over_a_conversation
from rasa_server import patches

ORIGINAL_RUN = DaskGraphRunner.run


@pytest.fixture(scope="module")
def installed():
    patches.install(["graph_order"])
    yield
    patches.uninstall()


@pytest.fixture(scope="module")
def agent():
    return load_agent()


def test_graphs_run_in_order_give_what_dask_gave(installed, agent):
    """The model's NLU and dialogue graphs, run directly and through dask: the same parse of
    every message and the same predictions after each of them."""
    import dask

    patched, dask_get = DaskGraphRunner.run, dask.get
    try:
        DaskGraphRunner.run = ORIGINAL_RUN
        through_dask = predictions_over_a_conversation(agent)
        DaskGraphRunner.run, dask.get = patched, None  # not called when run in order
        in_order = predictions_over_a_conversation(agent)
    finally:
        DaskGraphRunner.run, dask.get = patched, dask_get
    assert in_order == through_dask
    assert len({turn[1][0] for turn in in_order}) > 3  # several different actions were predicted
