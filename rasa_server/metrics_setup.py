"""The folder where each Rasa worker keeps its metric values (prometheus_client's multiprocess
mode), made before prometheus_client is imported: it reads PROMETHEUS_MULTIPROC_DIR then.
Kept apart from rasa_server/metrics.py, which imports prometheus_client."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "rasa-metrics-"


def prepare(env=os.environ) -> None:
    """A fresh folder: PROMETHEUS_MULTIPROC_DIR emptied of an earlier run's values (they would be
    added to ours), or a new temporary one."""
    folder = env.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=PREFIX)


def cleanup() -> None:
    """Removes the folder prepare() made (not one it was given)."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if folder and Path(folder).name.startswith(PREFIX) and Path(folder).parent == Path(tempfile.gettempdir()):
        shutil.rmtree(folder, ignore_errors=True)
        # Processes started after this one must not be pointed at a folder that is gone.
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
