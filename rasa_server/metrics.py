"""The Rasa process's metrics, in Prometheus text format on a port of their own
(METRICS_HOST:METRICS_PORT_RASA, default 127.0.0.1:9105), never on the public REST port.

Rasa may run several Sanic workers (forked processes): prometheus_client's multiprocess mode
keeps each process's values in files under PROMETHEUS_MULTIPROC_DIR, and the one server
(started in the parent, before Rasa, by `serve()`) adds them up. The directory is made fresh
per start by rasa_server/metrics_setup.py before prometheus_client is first imported, which it
reads then. Imported without it (unit tests of a channel) the values simply stay in memory.

The series are listed in docs/operations.md (Metrics).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import multiprocess

from backend import events as backend_events

log = logging.getLogger(__name__)

TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Registered in no registry: the server reads every process's values from the files
# (MultiProcessCollector), and another process's metrics module may share the names.
CHANNELS = ("rest", "whatsapp")
# Why a channel apologised instead of answering (rest/channel.py, whatsapp/channel.py).
APOLOGY_CAUSES = ("action_failed", "conversation_store", "database", "timeout", "error", "no_reply")

TURN_SECONDS = Histogram("asisten_turn_seconds", "Time from a message to its replies, by channel and outcome "
                         "(answered, apology)", ["channel", "outcome"], buckets=TURN_BUCKETS, registry=None)
APOLOGIES = Counter("asisten_apologies_total", "Turns answered with the apology instead of an answer, by cause",
                    ["channel", "cause"], registry=None)
SIGNATURE_FAILURES = Counter("asisten_whatsapp_signature_failures_total",
                             "WhatsApp webhook POSTs refused for a missing or wrong X-Hub-Signature-256", ["reason"],
                             registry=None)
GRAPH_ERRORS = Counter("asisten_graph_api_errors_total", "Graph API calls that failed, by Meta's error code "
                       "(or http_<status>, no_answer)", ["code"], registry=None)
POOL_WAIT = Histogram("asisten_db_pool_wait_seconds", "Time waiting for a free database connection, by pool",
                      ["pool"], buckets=WAIT_BUCKETS, registry=None)
LOCK_WAIT = Histogram("asisten_lock_wait_seconds", "Time a turn waited for the conversation's earlier turns "
                      "(lock store)", ["store"], buckets=WAIT_BUCKETS + (30.0, 60.0), registry=None)
MODEL = Gauge("asisten_model_info", "The model loaded, 1: its fingerprint (sha256 of the file, first 16 hex), "
              "Rasa's model id and training time", ["sha256", "model_id", "trained_at"], multiprocess_mode="max",
              registry=None)
PATCHES = Gauge("asisten_speed_patches_info", "The speed patches requested (RASA_PATCHES) and installed",
                ["requested", "installed"], multiprocess_mode="max", registry=None)
PATCHES_MISSING = Gauge("asisten_speed_patches_missing", "Speed patches requested but not installed (a Rasa "
                        "version other than the one they were written for)", multiprocess_mode="max", registry=None)


class Recorder:
    """backend.events.Events for this process (the channels' database pools, Graph API)."""

    def otp_delivery(self, outcome: str) -> None:
        pass  # the action server delivers codes

    def otp_refused(self, limit: str) -> None:
        pass

    def pool_wait(self, pool: str, seconds: float) -> None:
        POOL_WAIT.labels(pool).observe(seconds)

    def graph_error(self, code: str) -> None:
        GRAPH_ERRORS.labels(code).inc()


def serve(requested: tuple[str, ...], installed: tuple[str, ...], env=os.environ) -> str:
    """The metrics server (a thread of this process), the patch set, the recorder, and Rasa's
    model loading watched. Returns the line to log (logging is not configured yet)."""
    backend_events.install(Recorder())
    PATCHES.labels(",".join(requested) or "none", ",".join(installed) or "none").set(1)
    PATCHES_MISSING.set(len(set(requested) - set(installed)))
    for channel in CHANNELS:  # every series present from the start, at 0
        for cause in APOLOGY_CAUSES:
            APOLOGIES.labels(channel, cause)
    for reason in ("missing", "invalid"):
        SIGNATURE_FAILURES.labels(reason)
    host = env.get("METRICS_HOST") or "127.0.0.1"
    port = int(env.get("METRICS_PORT_RASA") or 9105)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    watch_model_loading()
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        # Answering citizens matters more than being watched; the `up` alert notices this.
        return f"metrics not served: {host}:{port} unavailable ({exc})"
    return f"metrics on http://{host}:{port}/metrics"


def watch_model_loading() -> None:
    """Agent.load_model, followed by asisten_model_info for the model it loaded."""
    from rasa.core.agent import Agent

    load_model = Agent.load_model
    if getattr(load_model, "_watched", False):
        return

    def watched(self, model_path, fingerprint=None):
        load_model(self, model_path, fingerprint)
        metadata = getattr(self.processor, "model_metadata", None)
        trained_at = getattr(metadata, "trained_at", None)
        model_loaded(model_path, getattr(metadata, "model_id", ""),
                     trained_at.isoformat(timespec="seconds") if trained_at else "")

    watched._watched = True
    Agent.load_model = watched


def model_loaded(model_path: str | os.PathLike, model_id: str, trained_at: str) -> None:
    digest = hashlib.sha256()
    try:
        with open(model_path, "rb") as model:
            for block in iter(lambda: model.read(1 << 20), b""):
                digest.update(block)
        sha = digest.hexdigest()[:16]
    except OSError:
        sha = "unreadable"
    MODEL.labels(sha, model_id or "?", trained_at or "?").set(1)
    log.info("model loaded: %s (sha256 %s..., model id %s)", Path(model_path).name, sha, model_id or "?")
