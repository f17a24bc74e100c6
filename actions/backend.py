"""The action server's handle on the backend, created once per process, and a way to call it
without blocking the event loop (the backend's database calls block)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from backend import Backend, DeliveryWorker
from backend.repository import utcnow
from backend.settings import get_settings

from .senders import make_otp_sender

T = TypeVar("T")

_lock = threading.Lock()
_backend: Backend | None = None
_executor: ThreadPoolExecutor | None = None
_worker: DeliveryWorker | None = None


def get_backend() -> Backend:
    global _backend, _executor
    if _backend is None:
        with _lock:
            if _backend is None:
                settings = get_settings()
                # The sender OTP_SENDER names, plugged in here: the backend knows none of them.
                backend = Backend.create(settings, clock=utcnow, otp_sender=make_otp_sender(settings, utcnow))
                # As many threads as connections: a call never waits for a thread while
                # holding nothing, nor for a connection while holding a thread it blocks.
                _executor = ThreadPoolExecutor(backend.settings.db_pool_max, thread_name_prefix="db")
                _backend = backend
    return _backend


def set_backend(backend: Backend | None) -> None:
    """Tests use their own backend (their database, their clock)."""
    global _backend, _executor
    with _lock:
        _backend = backend
        if backend is not None and _executor is None:
            _executor = ThreadPoolExecutor(backend.settings.db_pool_max, thread_name_prefix="db")


def start_delivery() -> None:
    """Start this process's OTP delivery worker (at server start; once)."""
    global _worker
    backend = get_backend()
    with _lock:
        if _worker is None:
            _worker = DeliveryWorker(backend.otp).start()


def stop_delivery() -> None:
    """Stop it, letting a send in progress end; queued codes stay for the next process."""
    global _worker
    with _lock:
        worker, _worker = _worker, None
    if worker is not None:
        worker.stop()


async def call(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run a blocking backend call in the database thread pool, in the caller's context (its
    log lines keep the turn's request id)."""
    get_backend()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, contextvars.copy_context().run,
                                      functools.partial(fn, *args, **kwargs))
