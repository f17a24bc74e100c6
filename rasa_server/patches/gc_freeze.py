"""The start-up heap left out of garbage collection once the model is loaded.

Wraps `rasa.core.run.load_agent_on_start`.
Why: Python's full garbage collection walks every object the process holds, and the Rasa
process holds millions from start-up on (TensorFlow, the models, the domain) that live as long
as it does; each full collection stopped every conversation of the process (what the slowest
replies were made of). Once the model is loaded, the objects made so far are collected once
and frozen (gc.freeze: left out of every later collection); what conversations create is
collected as before, the youngest objects after YOUNG_COLLECTION_THRESHOLD allocations
instead of 700 (a message makes thousands). Replaces the former GC_FREEZE=0 switch: leave
`gc_freeze` out of RASA_PATCHES.
Rasa internals touched: `rasa.core.run.load_agent_on_start` (module function, called by
Sanic's before_server_start listener through the module attribute).
"""

from __future__ import annotations

import functools
import gc
import logging
from typing import Any

from rasa_server.patches import patch

logger = logging.getLogger(__name__)
YOUNG_COLLECTION_THRESHOLD = 20_000


def install() -> None:
    from rasa.core import run

    original = run.load_agent_on_start

    @functools.wraps(original)
    async def load_agent_on_start(*args: Any, **kwargs: Any) -> Any:
        agent = await original(*args, **kwargs)
        gc.collect()
        gc.freeze()
        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])
        logger.debug("%d objects of the start-up left out of garbage collection", gc.get_freeze_count())
        return agent

    patch(run, "load_agent_on_start", load_agent_on_start)
