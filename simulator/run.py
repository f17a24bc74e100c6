"""Starts the assistant with its WhatsApp channel pointed at the simulator, which serves the page.

`launch` is what `make simulator` (python -m simulator) runs and what the browser test starts:
PostgreSQL is the caller's; then the simulator (fake Meta + page), the action server, and Rasa
with the WHATSAPP_* settings of the simulator and its HTTP API on loopback (for "new
conversation"). Secrets are made up per run: nothing here talks to Meta.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from tools.stack import ROOT, Stack, log

from .server import RasaConversations, Simulator


@dataclass
class SimulatorStack(Stack):
    """The usual stack; Rasa also serves its HTTP API (token-protected, on 127.0.0.1)."""
    api_token: str = ""

    def rasa_args(self, command: str) -> list[str]:
        args = super().rasa_args(command)
        return args + ["--enable-api", "--auth-token", self.api_token] if self.api_token else args


@dataclass
class Running:
    simulator: Simulator
    stack: SimulatorStack

    @property
    def url(self) -> str:
        return self.simulator.base_url + "/"

    def stop(self) -> None:
        self.stack.stop()
        self.simulator.stop()


def outbox_path(env: dict) -> Path:
    """Where the development OTP sender writes (backend.settings resolves it the same way)."""
    var_dir = Path(env.get("VAR_DIR") or ROOT / "var")
    path = Path(env.get("OTP_OUTBOX") or var_dir / "outbox.jsonl")
    return path if path.is_absolute() else ROOT / path  # the action server runs in ROOT


def launch(database_url: str, *, host: str = "127.0.0.1", port: int = 8090, rasa_port: int = 5005,
           action_port: int = 5055, log_dir: Path = ROOT / "var" / "log",
           extra_env: dict[str, str] | None = None) -> Running:
    env = {**os.environ, **(extra_env or {})}
    app_secret, verify_token, api_token = (secrets.token_hex(16) for _ in range(3))
    simulator = Simulator(host=host, port=port, outbox=outbox_path(env),
                          rasa=RasaConversations(f"http://127.0.0.1:{rasa_port}", api_token))
    simulator.start()
    simulator.webhook_url = f"http://127.0.0.1:{rasa_port}/webhooks/whatsapp/webhook"
    simulator.app_secret = app_secret
    stack = SimulatorStack(database_url, rasa_port=rasa_port, action_port=action_port, log_dir=log_dir,
                           api_token=api_token,
                           extra_env={**(extra_env or {}), **simulator.env(app_secret, verify_token),
                                      # rasa_server refuses the HTTP API unless told (docs/platform.md).
                                      "RASA_SERVER_ALLOW_API": "1",
                                      # The code goes to the outbox the page shows, unless asked otherwise.
                                      "OTP_SENDER": env.get("OTP_SENDER") or "outbox"})
    running = Running(simulator, stack)
    try:
        stack.start_actions()
        stack.start_rasa()
        # As Meta does when the webhook is saved in the app's settings.
        if not simulator.verify_webhook(verify_token):
            raise RuntimeError("the channel refused the webhook handshake")
    except BaseException:
        running.stop()
        raise
    log(f"WhatsApp simulator ready: {running.url}")
    return running
