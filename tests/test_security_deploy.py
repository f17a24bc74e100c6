"""Deployment security: secrets that are placeholders or short stop the process; development
secrets are private files from their first byte; every process connects to PostgreSQL with
only the privileges it needs (deploy/postgres/roles.sql, backend/privileges.py)."""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path

import pytest

from backend import secret_rules
from backend.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
STRONG = secrets.token_hex(32)
SIGNING_KEY = base64.b64encode(secrets.token_bytes(32)).decode()

# Every placeholder value deploy/ ships, read from the files themselves, plus the usual ones.
def _deploy_placeholders() -> set[str]:
    import yaml

    values = set(yaml.safe_load((ROOT / "deploy/k8s/secret.example.yaml").read_text())["stringData"].values())
    for line in (ROOT / "deploy/env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            values.add(line.split("=", 1)[1])
    return {v for v in values if "PLACEHOLDER" in v}


PLACEHOLDERS = sorted(_deploy_placeholders()) + [
    "changeme-changeme-changeme-changeme-0001", "Change-Me-Please-0123456789abcdef0123456789",
    "example-secret-0123456789abcdef0123456789abcdef", "<app secret>", "...",
    "x" * 64, "0" * 64]
SHORT = ["s3cr3t", "a1b2c3d4e5f60718293a4b5c6d7e8f9"]  # 6 and 31 bytes


def production_env(**overrides) -> dict:
    env = {"REQUIRE_SECRETS": "1", "OTP_HASH_KEY": STRONG, "ACTION_SERVER_TOKEN": secrets.token_hex(32),
           "CERTIFICATE_SIGNING_KEY": SIGNING_KEY, "VAR_DIR": os.environ.get("PYTEST_TMP", "/tmp/vaksin-sec-e")}
    env.update(overrides)
    return env


def test_deploy_ships_placeholders_and_a_strong_environment_starts():
    assert len(_deploy_placeholders()) >= 8  # secret.example.yaml and env.example both read
    settings = Settings.from_env(production_env())
    assert settings.otp_hash_key == STRONG.encode()


@pytest.mark.parametrize("name", ["OTP_HASH_KEY", "ACTION_SERVER_TOKEN", "CERTIFICATE_SIGNING_KEY",
                                  "WHATSAPP_ACCESS_TOKEN", "SMS_GATEWAY_TOKEN"])
@pytest.mark.parametrize("value", PLACEHOLDERS)
def test_action_server_refuses_placeholder_secrets(name, value):
    with pytest.raises(ValueError) as refused:
        Settings.from_env(production_env(**{name: value}))
    message = str(refused.value)
    assert name in message and "placeholder" in message
    assert value.strip() not in message


@pytest.mark.parametrize("name", ["OTP_HASH_KEY", "ACTION_SERVER_TOKEN"])
@pytest.mark.parametrize("value", SHORT)
def test_action_server_refuses_short_secrets(name, value):
    with pytest.raises(ValueError) as refused:
        Settings.from_env(production_env(**{name: value}))
    message = str(refused.value)
    assert name in message and "too short" in message and value not in message


@pytest.mark.parametrize("password", [PLACEHOLDERS[0], "postgres", SHORT[1]])
def test_a_weak_database_password_is_refused_without_showing_it(password):
    url = f"postgresql://vaksin_actions:{password}@postgres:5432/vaksin"
    with pytest.raises(ValueError) as refused:
        Settings.from_env(production_env(DATABASE_URL=url))
    message = str(refused.value)
    assert "DATABASE_URL" in message and password not in message and url not in message
    # No password at all (certificate or IAM authentication) is allowed.
    Settings.from_env(production_env(DATABASE_URL="postgresql://vaksin_actions@postgres:5432/vaksin"))


RASA_ENV = {"ACTION_SERVER_TOKEN": secrets.token_hex(32), "TRACKER_DB_PASSWORD": secrets.token_hex(24),
            "REDIS_PASSWORD": secrets.token_hex(32), "WHATSAPP_APP_SECRET": secrets.token_hex(16),
            "WHATSAPP_VERIFY_TOKEN": secrets.token_hex(32), "WHATSAPP_ACCESS_TOKEN": "EAAG" + secrets.token_urlsafe(150)}


@pytest.mark.parametrize("name", sorted(set(RASA_ENV) - {"WHATSAPP_ACCESS_TOKEN"}))
def test_rasa_refuses_placeholder_and_short_secrets_when_its_tracker_store_starts(name, database_url, monkeypatch):
    from tests.conftest import make_store

    for key, value in RASA_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("REQUIRE_SECRETS", "1")
    make_store(database_url).dispose()  # strong secrets: Rasa's store starts
    for value in (PLACEHOLDERS[0], SHORT[1]):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValueError) as refused:
            make_store(database_url)
        assert name in str(refused.value) and value not in str(refused.value)


def test_without_require_secrets_development_values_still_work():
    assert secret_rules.check({"OTP_HASH_KEY": "x"}, ["OTP_HASH_KEY"]) is None
    Settings.from_env({"VAR_DIR": production_env()["VAR_DIR"], "OTP_HASH_KEY": "test-key-not-secret"})


# --- development secrets under var/secrets ------------------------------------------------------

@pytest.fixture
def no_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_development_secrets_are_private_from_the_first_byte(tmp_path, no_umask, monkeypatch):
    # With umask 0 and no chmod at all, files and folder are still created private: the mode is
    # given when each is created, not fixed afterwards.
    def no_chmod(*args, **kwargs):
        raise AssertionError("chmod called: the file was created readable by others")

    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(Path, "chmod", no_chmod)
    settings = Settings.from_env({"VAR_DIR": str(tmp_path / "var")})
    folder = tmp_path / "var" / "secrets"
    assert _mode(folder) == 0o700
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == ["action_server_token", "certificate_signing_key", "otp_hash_key"]
    assert all(_mode(f) == 0o600 for f in files), {f.name: oct(_mode(f)) for f in files}
    assert settings.otp_hash_key == (folder / "otp_hash_key").read_text().encode()


def test_a_looser_secrets_folder_and_file_are_tightened(tmp_path, no_umask):
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o755)
    (folder / "otp_hash_key").write_text(STRONG)  # 0666 under umask 0
    assert _mode(folder) == 0o755 and _mode(folder / "otp_hash_key") == 0o666
    settings = Settings.from_env({"VAR_DIR": str(tmp_path)})
    assert settings.otp_hash_key == STRONG.encode()
    assert _mode(folder) == 0o700 and _mode(folder / "otp_hash_key") == 0o600
