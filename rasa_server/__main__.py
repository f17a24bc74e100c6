"""`python -m rasa_server run ...` is `rasa run ...` with the speed patches of
rasa_server/patches/ that RASA_PATCHES selects (all by default; `none` runs stock Rasa).

Every process that serves citizens starts this way (tools/stack.py, deploy/), and so do the
test stories (`make test-core`, once with the patches and once without), so that they check the
Rasa that answers citizens. `rasa train` needs none of it and stays plain `rasa`.
"""

import os
import sys
from typing import Mapping

# Options that open Rasa to browsers or to remote models; refused whatever the configuration
# (docs/platform.md: sanic-cors' unanchored origin regex, CVE-2024-49375's model loading).
REFUSED_OPTIONS = {
    "--cors": "CORS (sanic-cors matches origins unanchored, CVE-2026-37737; no browser calls Rasa)",
    "--enable-api": "Rasa's HTTP API (trackers of every citizen, model loading: CVE-2024-49375)",
    "--remote-storage": "models from remote storage (only the model trained and tested here runs)",
}


def refused(argv: list[str], env: Mapping[str, str]) -> str | None:
    """Why these arguments may not start Rasa, or None. The simulator alone (a development tool
    on loopback) opts in to the HTTP API, with a token of its own per run."""
    names = [arg.split("=", 1)[0] for arg in argv]
    for name in names:
        if name == "--enable-api" and env.get("RASA_SERVER_ALLOW_API") == "1" and "--auth-token" in names:
            continue
        if name in REFUSED_OPTIONS:
            return f"rasa_server: {name} is refused: {REFUSED_OPTIONS[name]}"
    return None


def say(line: str, log_format: str) -> None:
    """One line of our own on stderr, before Rasa configures logging, in the LOG_FORMAT."""
    if log_format == "json":
        from backend.logformat import json_line

        line = json_line("INFO", "rasa_server", line)
    print(line if log_format == "json" else f"rasa_server: {line}", file=sys.stderr, flush=True)


def keep_json_handler() -> None:
    """Rasa's CLI installs coloredlogs after applying --logging-config-file, which swaps the
    handler's formatter for its text one (keeping its filters). In json the handler of
    logging.yml stays; only the level is lowered as coloredlogs would (LOG_LEVEL=DEBUG)."""
    import logging

    import rasa.utils.io

    def configure_level(loglevel) -> None:
        level = logging.getLevelName(loglevel or os.environ.get("LOG_LEVEL") or "INFO")
        root = logging.getLogger()
        if isinstance(level, int) and level < root.getEffectiveLevel():
            root.setLevel(level)

    rasa.utils.io.configure_colored_logging = configure_level


def main() -> None:
    reason = refused(sys.argv[1:], os.environ)
    if reason:
        sys.exit(reason)
    from backend.logformat import capture_early, log_format
    from rasa_server import patches

    try:
        selection = patches.selection_from(os.environ)
        form = log_format(os.environ)
    except (patches.SelectionError, ValueError) as error:
        sys.exit(f"rasa_server: {error}")
    capture_early()
    from rasa_server import metrics_setup

    metrics_setup.prepare()  # before anything imports prometheus_client
    installed = patches.install(selection) if selection else ()
    say(patches.describe(installed), form)
    if sys.argv[1:2] == ["run"]:
        from rasa_server import metrics, model_id

        say(model_id.describe(sys.argv[2:]), form)
        say(metrics.serve(selection, installed), form)
    if form == "json":
        keep_json_handler()
    from rasa.__main__ import main as rasa_main

    sys.argv[0] = "rasa"
    try:
        rasa_main()
    finally:
        metrics_setup.cleanup()


if __name__ == "__main__":
    main()
