"""The model a Rasa process serves is named by its sha256 at start (rasa_server/model_id.py):
the hash the image build checked against MODEL_SHA256 (deploy/Dockerfile)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port

from rasa_server import model_id

ROOT = Path(__file__).resolve().parent.parent


def _sha256sum(path: Path) -> str:
    # coreutils' sha256sum, the tool the Dockerfile and the release steps use.
    return subprocess.run(["sha256sum", str(path)], check=True, capture_output=True, text=True).stdout.split()[0]


def test_the_model_argument_is_read_as_rasa_reads_it():
    assert model_id.model_argument(["--model", "models/a.tar.gz", "--port", "5005"]) == "models/a.tar.gz"
    assert model_id.model_argument(["-m", "b.tar.gz"]) == "b.tar.gz"
    assert model_id.model_argument(["--model=c.tar.gz"]) == "c.tar.gz"
    assert model_id.model_argument(["--port", "5005"]) == "models"
    assert model_id.model_argument(["--model"]) == "models"  # Rasa's own parser refuses that line


def test_the_logged_hash_is_the_files_sha256_and_a_folder_means_its_newest_model(tmp_path):
    older, newer = tmp_path / "older.tar.gz", tmp_path / "newer.tar.gz"
    older.write_bytes(os.urandom(3 << 20))  # more than one read block
    newer.write_bytes(os.urandom(1000))
    past = time.time() - 3600
    os.utime(older, (past, past))
    assert model_id.describe(["--model", str(older)]) == f"model {older} sha256 {_sha256sum(older)}"
    assert model_id.describe(["--model", str(tmp_path)]) == f"model {newer} sha256 {_sha256sum(newer)}"


def test_a_missing_model_is_named_without_stopping_the_start(tmp_path):
    line = model_id.describe(["--model", str(tmp_path / "absent.tar.gz")])
    assert line.startswith(f"model {tmp_path / 'absent.tar.gz'}: none readable")


@pytest.mark.skipif(not (ROOT / "models" / "current.tar.gz").exists(), reason="no trained model (make train)")
def test_rasa_server_run_logs_the_served_models_hash_before_rasa_starts(monkeypatch, capsys):
    import rasa_server.__main__ as launcher

    model = ROOT / "models" / "current.tar.gz"
    handed_over = []
    fake_rasa_main = type(sys)("rasa.__main__")
    fake_rasa_main.main = lambda: handed_over.append(list(sys.argv))
    monkeypatch.setitem(sys.modules, "rasa.__main__", fake_rasa_main)
    monkeypatch.setenv("RASA_PATCHES", "none")
    monkeypatch.setenv("METRICS_PORT_RASA", str(free_port()))  # not the default a stack uses
    monkeypatch.setattr(sys, "argv", ["rasa_server", "run", "--model", str(model), "--port", "5005"])
    launcher.main()
    err = capsys.readouterr().err
    assert f"rasa_server: model {model} sha256 {_sha256sum(model)}\n" in err
    assert handed_over == [["rasa", "run", "--model", str(model), "--port", "5005"]]
