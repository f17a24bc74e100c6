"""docs/platform.md holds: the versions it names are the ones pinned and installed, models come
only from the pinned Rasa, and no shipped configuration opens Rasa or the action server to
browsers (CORS) or to remote models."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from rasa_server.__main__ import REFUSED_OPTIONS, refused
from tools.stack import MODEL

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "platform.md").read_text()


def pinned() -> dict[str, str]:
    lock = (ROOT / "requirements.lock").read_text()
    return {name.lower(): version for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", lock, re.M)}


def documented() -> dict[str, str]:
    table = DOC.split("## Pinned versions", 1)[1].split("\n## ", 1)[0]
    return {name.lower(): version for name, version in re.findall(r"^\| ([A-Za-z][\w-]*) \| ([\d.]+) \|", table, re.M)}


def test_the_documented_versions_are_the_pinned_and_installed_ones():
    doc, lock = documented(), pinned()
    assert {"rasa", "rasa-sdk", "sanic", "sanic-cors", "tensorflow", "python"} <= set(doc)
    for name, version in doc.items():
        if name == "python":
            assert sys.version.startswith(version + "."), "docs/platform.md names another Python"
            assert "<3.11" in metadata.metadata("rasa")["Requires-Python"]
            continue
        assert lock[name] == version, f"{name}: requirements.lock has {lock[name]}, docs/platform.md {version}"
        assert metadata.version(name) == version, f"{name} {metadata.version(name)} is installed"


@pytest.mark.skipif(not MODEL.exists(), reason="no trained model: run `make train`")
def test_the_model_is_trained_by_the_pinned_rasa_and_older_models_are_refused():
    import rasa
    from rasa.constants import MINIMUM_COMPATIBLE_VERSION
    from rasa.engine.storage.local_model_storage import LocalModelStorage

    assert rasa.__version__ == pinned()["rasa"] == "3.6.21"
    assert MINIMUM_COMPATIBLE_VERSION == "3.6.21"  # CVE-2024-49375's fix: older models refused
    assert LocalModelStorage.metadata_from_archive(MODEL).rasa_open_source_version == "3.6.21"


@pytest.mark.parametrize("option", ["--cors", "--cors=*", "--enable-api", "--remote-storage"])
def test_rasa_server_refuses_options_that_open_it(option):
    result = subprocess.run([sys.executable, "-m", "rasa_server", "run", option, "*", "--model", str(MODEL)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"rasa_server: {option.split('=')[0]} is refused: ")
    assert set(REFUSED_OPTIONS) == {"--cors", "--enable-api", "--remote-storage"}


def test_only_the_simulator_opts_in_to_the_http_api_and_only_with_a_token():
    api = ["run", "--enable-api", "--auth-token", "t0k3n"]
    assert refused(api, {}) and refused(api, {"RASA_SERVER_ALLOW_API": "yes"})
    assert refused(["run", "--enable-api"], {"RASA_SERVER_ALLOW_API": "1"})  # no token: refused
    assert refused(api, {"RASA_SERVER_ALLOW_API": "1"}) is None
    assert refused(api + ["--cors", "*"], {"RASA_SERVER_ALLOW_API": "1"})  # CORS never
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    # tests/deploy_support.py lists it among the variables production leaves unset.
    opted_in = [name for name in tracked.split() if not name.startswith("tests/")
                and (ROOT / name).is_file()
                and "RASA_SERVER_ALLOW_API" in (ROOT / name).read_text(errors="replace")]
    assert sorted(opted_in) == ["rasa_server/__main__.py", "simulator/run.py"]


def test_no_shipped_configuration_enables_cors():
    """Every file that starts or configures a server: no CORS origins, no HTTP API, no model
    server; the action server is built without origins."""
    shipped = [ROOT / name for name in ("Makefile", "endpoints.yml", "credentials.yml", "tools/stack.py",
                                        "actions/server.py", "simulator/run.py")]
    shipped += sorted((ROOT / "deploy").rglob("*"))
    for path in (p for p in shipped if p.is_file()):
        text = path.read_text(errors="replace")
        assert "--cors" not in text, path
        if path.name != "run.py":  # the simulator's own opt-in, tested above
            assert "--enable-api" not in text.replace("No --enable-api", ""), path
        assert not re.search(r"cors_origins\s*=\s*(?!None)", text), path
        assert not re.search(r"^\s*models?:", text, re.M) or path.suffix not in (".yml", ".yaml") \
            or "models/current.tar.gz" in text, path
