"""`make simulator`: the whole assistant, talked to as on WhatsApp from a page on localhost.

    python -m simulator              # page on http://localhost:8090/ (SIMULATOR_PORT), until Ctrl-C

It listens on loopback only: `--host` beyond it (0.0.0.0, a LAN address) is refused unless
SIMULATOR_ALLOW_REMOTE=1, since the page shows every number's OTP codes to whoever reaches it.

Rasa and the action server use RASA_PORT and ACTION_SERVER_PORT (5005, 5055) as `make serve`
does, and DATABASE_URL or the embedded PostgreSQL under var/.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from tools.stack import MODEL, ROOT, database_url, log, prepare_database

from .run import launch
from .server import RemoteHostRefused, check_listen_host


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=int(os.environ.get("SIMULATOR_PORT") or 8090))
    parser.add_argument("--host", default="127.0.0.1",
                        help="where the page is served: loopback only, unless SIMULATOR_ALLOW_REMOTE=1")
    args = parser.parse_args()
    try:
        check_listen_host(args.host, warn=False)  # before the database or anything else starts
    except RemoteHostRefused as exc:
        log(f"refused: {exc}")
        return 2

    def interrupt(*_):
        raise KeyboardInterrupt()

    # As tools.stack: Ctrl-C and SIGTERM both end in the finally block that stops everything.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    if not MODEL.exists():
        log(f"no model at {MODEL}: run `make train` first")
        return 1
    url = database_url(Path(os.environ.get("VAR_DIR") or ROOT / "var"))
    prepare_database(url)
    running = None
    try:
        started = time.monotonic()
        running = launch(url, host=args.host, port=args.port,
                         rasa_port=int(os.environ.get("RASA_PORT") or 5005),
                         action_port=int(os.environ.get("ACTION_SERVER_PORT") or 5055))
        log(f"everything up in {time.monotonic() - started:.1f} s; open {running.url} "
            f"(OTP codes appear in its side panel); Ctrl-C stops")
        while all(p.poll() is None for p in running.stack.processes):
            time.sleep(1)
        log("a process exited; stopping the rest")
        return 1
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        if running is None and "address already in use" in str(exc).lower():
            log(f"a port is taken ({exc}); free it, or choose others: "
                "SIMULATOR_PORT=8091 RASA_PORT=5006 ACTION_SERVER_PORT=5056 make simulator")
            return 1
        raise
    finally:
        if running is not None:
            running.stop()
        log("stopped")


if __name__ == "__main__":
    sys.exit(main())
