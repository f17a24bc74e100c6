"""Layers point one way (issue 19): channels (rest/, whatsapp/) -> Rasa (rasa_server/) ->
actions/ -> backend/, read from the source with `ast`: every import, also those inside
functions, and importlib.import_module / __import__ of a literal name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("backend", "actions", "rasa_server", "rest", "whatsapp", "tools", "nlu_components", "simulator")
CHANNELS = ("rest", "whatsapp")

# package -> the top-level names its modules may not import.
FORBIDDEN = {
    # The domain knows nothing of Rasa, the channels or the tools: they plug into it.
    "backend": ("rasa", "rasa_sdk", "rasa_server", "whatsapp", "rest", "tools", "actions",
                "nlu_components", "simulator"),
    # The action server is its own process: no Rasa, no channel, no tool.
    "actions": ("rasa", "rasa_server", *CHANNELS, "tools", "nlu_components", "simulator"),
    # The channels go down through Rasa, never to the actions (another process) or the tools.
    "rest": ("actions", "tools", "simulator", "nlu_components", "whatsapp"),
    "whatsapp": ("actions", "tools", "simulator", "nlu_components", "rest"),
    # Rasa's layer does not know the channels that run on it.
    "rasa_server": (*CHANNELS, "actions", "tools", "simulator"),
    "nlu_components": ("backend", "actions", "rasa_server", *CHANNELS, "tools", "simulator"),
}
# What ships imports no test double: the fakes live in simulator/ and tests/ (issue 19).
PRODUCTION = ("actions", "backend", "rasa_server", "rest", "whatsapp")
FAKES = ("simulator", "tests")
for _package in PRODUCTION:
    FORBIDDEN[_package] = tuple(dict.fromkeys((*FORBIDDEN[_package], *FAKES)))

# (module file, imported module) allowed against the rules above, and why. Only assembling
# code: the place that picks an implementation and hands it to the layer below.
ALLOWED = {
    # The action server's OTP_SENDER=whatsapp: the channel's sender plugged into the backend.
    ("actions/senders.py", "whatsapp.otp"),
}


def _literal_imports(call: ast.Call) -> str | None:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name in ("import_module", "__import__") and call.args and isinstance(call.args[0], ast.Constant) \
            and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def imports_of(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file."""
    package = path.relative_to(root).with_suffix("").parts
    package = package[:-1] if package[-1] != "__init__" else package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if node.module:
                found.append((node.lineno, module))
            else:  # `from .. import x`: x is a module (or a package's name)
                found += [(node.lineno, ".".join(filter(None, (module, alias.name)))) for alias in node.names]
        elif isinstance(node, ast.Call) and (name := _literal_imports(node)):
            found.append((node.lineno, name))
    return found


def violations(root: Path = ROOT) -> list[str]:
    out = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            for line, module in imports_of(path, root):
                top = module.split(".")[0]
                if top in forbidden and not any(
                        relative == allowed_file and (module == allowed or module.startswith(allowed + "."))
                        for allowed_file, allowed in ALLOWED):
                    out.append(f"{relative}:{line} imports {module}")
    return sorted(set(out))


def test_layers_point_one_way():
    found = violations()
    assert found == [], "imports against the layers (tests/test_layers.py FORBIDDEN):\n  " + "\n  ".join(found)


def test_production_packages_import_no_fake():
    """Checked on its own so a change to the layer rules cannot let a fake into what ships."""
    found = [v for v in violations() if v.split(" imports ")[1].split(".")[0] in FAKES]
    assert found == []
    assert all(set(FAKES) <= set(FORBIDDEN[package]) for package in PRODUCTION)
    assert not list((ROOT / "whatsapp").glob("fake*.py")), "fakes belong in simulator/ or tests/"


def test_backend_reads_no_rasa_file():
    """The words the backend says are handed in (backend.wording): no backend module names
    domain.yml or endpoints.yml in its code."""
    named = []
    for path in sorted((ROOT / "backend").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    any(name in node.value for name in ("domain.yml", "endpoints.yml", "credentials.yml")) \
                    and not _is_docstring(tree, node):
                named.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert named == []


def _is_docstring(tree: ast.AST, constant: ast.Constant) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and first.value is constant:
                return True
    return False


@pytest.mark.parametrize("source, expected", [
    ("import rasa.core\n", ["backend/m.py:1 imports rasa.core"]),
    ("def f():\n    from whatsapp.otp import X\n", ["backend/m.py:2 imports whatsapp.otp"]),
    ("import importlib\nimportlib.import_module('tools.stack')\n", ["backend/m.py:2 imports tools.stack"]),
    ("from .. import tools\n", ["backend/m.py:1 imports tools"]),
    ("from . import db\nimport json\n", []),
    ("__import__('rasa_sdk')\n", ["backend/m.py:1 imports rasa_sdk"]),
    ("from simulator.fake_graph import FakeGraph\n", ["backend/m.py:1 imports simulator.fake_graph"]),
    ("from tests.whatsapp_support import x\n", ["backend/m.py:1 imports tests.whatsapp_support"]),
])
def test_the_reader_finds_imports_however_written(tmp_path, source, expected):
    (tmp_path / "backend").mkdir()
    (tmp_path / "backend" / "m.py").write_text(source)
    assert violations(tmp_path) == expected


# --- what the backend defines, and the assembling code plugs in ---------------------------------


class Recorder:
    """An OtpSender that keeps what it was given."""

    def __init__(self):
        self.sent = []

    def send(self, to: str, code: str, *, ttl_seconds: int, purpose: str) -> None:
        self.sent.append((to, code, ttl_seconds, purpose))


def test_every_otp_sender_has_the_backends_signature():
    import inspect

    from actions.senders import HttpSmsSender, OutboxSender
    from backend.otp import NoSender, OtpSender
    from whatsapp.otp import WhatsAppOtpSender

    wanted = inspect.signature(OtpSender.send)
    for sender in (OutboxSender, HttpSmsSender, WhatsAppOtpSender, NoSender, Recorder):
        assert inspect.signature(sender.send) == wanted, sender.__name__
        # One way in: no second method the backend would have to probe for.
        assert not hasattr(sender, "send_code"), sender.__name__


def test_the_backend_delivers_through_the_sender_it_is_handed(database_url, settings_env, clock, backend):
    from backend import Backend, Settings
    from backend.otp import CHANGE_PHONE

    recorder = Recorder()
    handed = Backend.create(Settings.from_env({**settings_env, "OTP_TTL_SECONDS": "120"}), dsn=database_url,
                            clock=clock, otp_sender=recorder)
    try:
        handed.otp.request("c1", "+6281234567001")
        handed.otp.request("c2", "+6281299990000", purpose=CHANGE_PHONE)
        assert handed.otp.drain() == 2
        [(to, code, ttl, purpose), second] = recorder.sent
        assert (to, ttl, purpose) == ("+6281234567001", 120, "login") and len(code) == 6
        assert second[0] == "+6281299990000" and second[2:] == (120, "change_phone")
        assert handed.otp.verify("c1", code).status == "ok"
    finally:
        handed.db.close()


def test_a_backend_without_a_sender_keeps_the_codes_queued(database_url, settings_env, clock, backend, caplog):
    """tools/ and jobs make a Backend without a sender: it refuses to send and the code waits
    for the action server, instead of going out some way nobody chose."""
    from backend import Backend, Settings

    bare = Backend.create(Settings.from_env(settings_env), dsn=database_url, clock=clock)
    try:
        bare.otp.request("c1", "+6281234567001")
        assert bare.otp.drain() == 1
        queued = bare.db.run(lambda cur: (cur.execute("SELECT count(*) AS n FROM otp_deliveries"),
                                          cur.fetchone()["n"])[1])
        assert queued == 1 and "failed: RuntimeError" in caplog.text
    finally:
        bare.db.close()


def test_the_action_server_plugs_in_the_sender_otp_sender_names(database_url, settings_env, monkeypatch):
    from actions import backend as action_backend
    from actions.senders import HttpSmsSender, OutboxSender, make_otp_sender
    from backend import Settings
    from backend.repository import utcnow
    from backend.settings import get_settings
    from whatsapp.otp import WhatsAppOtpSender

    for name, value in {**settings_env, "DATABASE_URL": database_url, "OTP_SENDER": "http",
                        "SMS_GATEWAY_URL": "http://127.0.0.1:9/send"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    action_backend.set_backend(None)
    try:
        assert isinstance(action_backend.get_backend().otp.sender, HttpSmsSender)
    finally:
        action_backend.get_backend().db.close()
        action_backend.set_backend(None)
        get_settings.cache_clear()
    assert isinstance(make_otp_sender(Settings.from_env(settings_env), utcnow), OutboxSender)
    whatsapp = {**settings_env, "OTP_SENDER": "whatsapp", "WHATSAPP_ACCESS_TOKEN": "t" * 40,
                "WHATSAPP_PHONE_NUMBER_ID": "123", "WHATSAPP_OTP_TEMPLATE": "kode"}
    assert isinstance(make_otp_sender(Settings.from_env(whatsapp), utcnow), WhatsAppOtpSender)
    with pytest.raises(ValueError, match="unknown OTP_SENDER 'pigeon'"):
        make_otp_sender(Settings.from_env({**settings_env, "OTP_SENDER": "pigeon"}), utcnow)


class Marked:
    """A Wording that says which response it was asked for, with the values given."""

    def text(self, name: str, /, **values) -> str:
        return f"<{name} {sorted(values.items())}>" if values else f"<{name}>"


def test_the_officer_desk_says_the_words_it_is_handed(backend):
    from backend.officer_desk import Notifier, OfficerDesk
    from backend.tickets import Tickets

    told = []
    desk = OfficerDesk(Tickets(backend.repo, Marked()), Notifier(backend.db, backend.repo.clock,
                                                                  lambda *sent: told.append(sent)))
    assert desk.tickets.label("wrong_data") == "<utter_ticket_category_wrong_data>"
    backend.db.run(lambda cur: cur.execute(
        "INSERT INTO tickets (reference, category, description, channel, conversation_id, created_at, updated_at)"
        " VALUES ('PL-2026-000009', 'wrong_data', 'x', 'whatsapp', '6281234567001', now(), now()),"
        " ('PL-2026-000010', 'other', 'x', 'rest', 'web-9', now(), now())"))
    assert desk.reject("PL-2026-000009", "rina", "tidak cocok") == "whatsapp_template"  # no message yet
    assert told == [("6281234567001", "<utter_ticket_rejected [('label', '<utter_ticket_category_wrong_data>'),"
                                      " ('note', 'tidak cocok'), ('reference', 'PL-2026-000009')]>", False)]
    assert desk.release("PL-2026-000010", "rina") == "stored"
    stored = backend.db.run(lambda cur: (cur.execute("SELECT text FROM notifications WHERE conversation_id = 'web-9'"),
                                         cur.fetchall())[1])
    assert [row["text"] for row in stored] == ["<utter_officer_released>"]


def test_a_wording_without_the_desks_responses_stops_it_at_start(backend):
    from backend.officer_desk import Notifier, OfficerDesk
    from backend.tickets import Tickets
    from backend.wording import Responses

    labels_only = Responses({f"utter_ticket_category_{c}": [{"text": c}] for c in (
        "certificate_missing", "wrong_data", "otp_not_received", "other", "correction_nik",
        "correction_birth_date", "handoff")})
    tickets = Tickets(backend.repo, labels_only)
    with pytest.raises(KeyError, match="utter_ticket_resolved"):
        OfficerDesk(tickets, Notifier(backend.db, backend.repo.clock, lambda *sent: None))
    with pytest.raises(KeyError, match="utter_ticket_category_"):
        Tickets(backend.repo, Responses({}))


def test_the_gate_gives_data_and_the_channels_say_the_words(backend, clock):
    from backend.officer_desk import Gate, gate
    from backend.tickets import Tickets
    from rasa_server import gate as channel_side

    assert gate(backend.db, "web-g", "halo", clock) == Gate([], False)
    Tickets(backend.repo, Marked()).start_handoff("web-g", "rest", ["halo"])
    assert gate(backend.db, "web-g", "masih di sana?", clock) == Gate([], True)
    assert channel_side.channel_gate(backend.db, "web-g", "pak?", clock) == ([], channel_side.HANDOFF_ACK)


def test_jobs_find_the_database_without_the_tools(monkeypatch, tmp_path):
    from backend.settings import database_url

    assert database_url(tmp_path, {"DATABASE_URL": "postgresql://u@h/db"}) == "postgresql://u@h/db"
    monkeypatch.setenv("DATABASE_URL", "postgresql://v@h/db")
    assert database_url(tmp_path) == "postgresql://v@h/db"


def test_endpoints_name_the_rasa_layers_stores():
    import importlib

    import yaml

    endpoints = yaml.safe_load((ROOT / "endpoints.yml").read_text())
    for section in ("tracker_store", "lock_store"):
        module, _, name = endpoints[section]["type"].rpartition(".")
        assert module.split(".")[0] == "rasa_server", section
        assert isinstance(getattr(importlib.import_module(module), name), type)
