"""rasa_server/patches/gc_freeze.py: the start-up heap frozen once the model is loaded."""

from __future__ import annotations

import asyncio

from rasa.core import run as rasa_run

from rasa_server import patches
from rasa_server.patches import gc_freeze


def test_the_start_up_heap_is_left_out_of_garbage_collection_once_the_model_is_loaded(monkeypatch):
    import gc

    loaded = object()

    async def load_agent_on_start(*args, **kwargs):
        assert gc.get_freeze_count() == 0  # not before the model is loaded
        return loaded

    monkeypatch.setattr(rasa_run, "load_agent_on_start", load_agent_on_start)
    thresholds = gc.get_threshold()
    patches.install(["gc_freeze"])
    try:
        assert asyncio.run(rasa_run.load_agent_on_start("model", None, None, None, None)) is loaded
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold()[0] == gc_freeze.YOUNG_COLLECTION_THRESHOLD
    finally:
        patches.uninstall()
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    assert rasa_run.load_agent_on_start is load_agent_on_start  # put back by uninstall()
