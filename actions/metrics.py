"""The action server's metrics, in Prometheus text format on a port of their own
(METRICS_HOST:METRICS_PORT_ACTIONS, default 127.0.0.1:9155), never on the public port 5055.

One process (workers=1): a registry of its own in memory. The backend reports through
backend.events (OTP deliveries and refusals, pool waits, Graph API errors of the WhatsApp OTP
sender); each action call is timed, its apologies counted, and run under the request id the
channel put in the turn's message (the latest user event of the tracker Rasa sends). The series
are listed in docs/operations.md (Metrics).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from rasa_sdk.executor import ActionExecutor

from backend import events as backend_events
from backend.events import REQUEST_ID, valid_request_id

log = logging.getLogger(__name__)

# A registry of its own: only these series, and none of another module's of the same names.
REGISTRY = CollectorRegistry()
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

OTP_DELIVERIES = Counter("asisten_otp_deliveries_total", "Queued OTP codes by what became of a try: sent, "
                         "failed (tried again), expired (given up), dropped (unreadable)", ["outcome"],
                         registry=REGISTRY)
OTP_REFUSED = Counter("asisten_otp_refused_total", "OTP requests refused by a limit", ["limit"], registry=REGISTRY)
POOL_WAIT = Histogram("asisten_db_pool_wait_seconds", "Time waiting for a free database connection, by pool",
                      ["pool"], buckets=WAIT_BUCKETS, registry=REGISTRY)
GRAPH_ERRORS = Counter("asisten_graph_api_errors_total", "Graph API calls that failed, by Meta's error code "
                       "(or http_<status>, no_answer)", ["code"], registry=REGISTRY)
ACTION_SECONDS = Histogram("asisten_action_seconds", "Time to run one custom action, by action and result",
                           ["action", "result"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
                           registry=REGISTRY)
ACTION_APOLOGIES = Counter("asisten_action_apologies_total", "Action replies that apologise instead of "
                           "answering, by cause", ["cause"], registry=REGISTRY)

# The responses that are apologies, and their cause (domain.yml; said when the backend's
# database is unreachable).
APOLOGY_RESPONSES = {"utter_service_unavailable": "database"}


class Recorder:
    """backend.events.Events, on prometheus_client."""

    def otp_delivery(self, outcome: str) -> None:
        OTP_DELIVERIES.labels(outcome).inc()

    def otp_refused(self, limit: str) -> None:
        OTP_REFUSED.labels(limit).inc()

    def pool_wait(self, pool: str, seconds: float) -> None:
        POOL_WAIT.labels(pool).observe(seconds)

    def graph_error(self, code: str) -> None:
        GRAPH_ERRORS.labels(code).inc()


def request_id_of(action_call: Any) -> str:
    """The request id in the metadata of the tracker's latest user message, or ""."""
    tracker = action_call.get("tracker") if isinstance(action_call, dict) else None
    events = tracker.get("events") if isinstance(tracker, dict) else None
    for event in reversed(events if isinstance(events, list) else []):
        if isinstance(event, dict) and event.get("event") == "user":
            metadata = event.get("metadata")
            return valid_request_id(metadata.get("request_id")) if isinstance(metadata, dict) else ""
    return ""


def watch_actions() -> None:
    """ActionExecutor.run timed, its apologies counted, under the turn's request id."""
    run = ActionExecutor.run
    if getattr(run, "_watched", False):
        return

    async def watched(self: ActionExecutor, action_call: Any):
        name = action_call.get("next_action") if isinstance(action_call, dict) else None
        label = name if isinstance(name, str) and name in self.actions else "unknown"
        token = REQUEST_ID.set(request_id_of(action_call))
        started, result = time.monotonic(), "error"
        try:
            reply = await run(self, action_call)
            result = "ok"
            for message in (reply or {}).get("responses") or []:
                cause = APOLOGY_RESPONSES.get(message.get("response")) if isinstance(message, dict) else None
                if cause:
                    ACTION_APOLOGIES.labels(cause).inc()
            return reply
        finally:
            ACTION_SECONDS.labels(label, result).observe(time.monotonic() - started)
            REQUEST_ID.reset(token)

    watched._watched = True
    ActionExecutor.run = watched


def install() -> None:
    """The recorder for the backend and the watch on actions (before the app is built)."""
    backend_events.install(Recorder())
    watch_actions()
    for outcome in ("sent", "failed", "expired", "dropped"):  # every series present from the start
        OTP_DELIVERIES.labels(outcome)
    for limit in ("per_hour", "resend_wait", "global_per_minute"):
        OTP_REFUSED.labels(limit)
    ACTION_APOLOGIES.labels("database")


def serve(env=os.environ) -> None:
    host = env.get("METRICS_HOST") or "127.0.0.1"
    port = int(env.get("METRICS_PORT_ACTIONS") or 9155)
    try:
        start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        # Answering citizens matters more than being watched; the `up` alert notices this.
        log.error("metrics not served: %s:%d unavailable (%s)", host, port, exc)
        return
    log.info("metrics on http://%s:%d/metrics", host, port)
