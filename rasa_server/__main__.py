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


def main() -> None:
    reason = refused(sys.argv[1:], os.environ)
    if reason:
        sys.exit(reason)
    from rasa_server import patches

    try:
        selection = patches.selection_from(os.environ)
    except patches.SelectionError as error:
        sys.exit(f"rasa_server: {error}")
    installed = patches.install(selection) if selection else ()
    # Before Rasa configures logging, so written as one line of our own on stderr.
    print(f"rasa_server: {patches.describe(installed)}", file=sys.stderr, flush=True)
    if sys.argv[1:2] == ["run"]:
        from rasa_server import model_id

        print(f"rasa_server: {model_id.describe(sys.argv[2:])}", file=sys.stderr, flush=True)
    from rasa.__main__ import main as rasa_main

    sys.argv[0] = "rasa"
    rasa_main()


if __name__ == "__main__":
    main()
