"""Which model a Rasa process serves, named by its sha256.

The release ships the model CI tested: the image copies models/current.tar.gz and checks it
against the MODEL_SHA256 build argument (deploy/Dockerfile). Logging the same hash at start lets
an operator see which model answers, and roll back to a known one (docs/operations.md).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

DEFAULT_MODEL = "models"  # Rasa's default for --model


def model_argument(argv: Sequence[str]) -> str:
    """The --model (-m) value of a `rasa run` command line, or Rasa's default."""
    for index, arg in enumerate(argv):
        for flag in ("--model", "-m"):
            if arg == flag and index + 1 < len(argv):
                return argv[index + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return DEFAULT_MODEL


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(argv: Sequence[str]) -> str:
    """One line naming the model file Rasa will load (resolved as Rasa resolves it: a folder
    means its newest model) and its sha256; never raises, Rasa reports a missing model itself."""
    from rasa.model import get_local_model

    argument = model_argument(argv)
    try:
        path = Path(get_local_model(argument))
        return f"model {path} sha256 {sha256_of(path)}"
    except Exception as error:  # noqa: BLE001 - a start-up line must not stop the start
        return f"model {argument}: none readable ({type(error).__name__})"
