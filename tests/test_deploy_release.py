"""Releases: the image copies what the commands import and ships the tested model (MODEL_SHA256);
the migration is one Job and the pods wait for the schema; every image carries a tag; the base
and each overlay, read as kustomize assembles them and rendered by `kubectl kustomize`, hold
the release checks (connection budget, volume, hashed ConfigMaps, TLS, autoscalers, OTP cap);
and the operator's release check (`python -m tools.release_check OVERLAY`) refuses what is not
pinned by a real digest. Spoiled manifests failing those checks: tests/test_deploy_budget.py."""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

import deploy_support as deploy
from deploy_support import DEPLOY, K8S, ROOT, RELEASE_SHAPE
from tools import release_check

KUBECTL = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders the overlays")
# The base read as kustomize would assemble it, then rendered by kubectl: the base and each overlay.
RENDERED = [("base", K8S)] + [(p.name, p) for p in deploy.overlays()]


@pytest.fixture(scope="module")
def objects():
    return deploy.k8s_objects()


# --- the image ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def copied():
    return {c.rstrip("/") for c in deploy.dockerfile()[1]}


@pytest.fixture(scope="module")
def dockerignore():
    return (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()


def test_the_dockerfile_copies_what_the_commands_and_configuration_import(copied):
    needed = {"requirements.txt", "requirements.lock", "endpoints.yml", "credentials.yml", "logging.yml",
              "config.yml", "domain.yml", "data", "actions", "backend", "tools"}
    # Top-level packages named by class paths in Rasa's configuration files.
    for name in ("endpoints.yml", "credentials.yml", "config.yml", "logging.yml"):
        for module in re.findall(r"\b([a-z_]+)\.[a-z_]+\.[A-Z]\w+", (ROOT / name).read_text()):
            if module not in ("rasa", "ext"):
                needed.add(module)
    assert sorted(needed - copied) == []


def test_the_dockerignore_lets_every_copy_source_through(copied, dockerignore):
    allowed = {line[1:].rstrip("/") for line in dockerignore if line.startswith("!")}
    assert sorted(copied - allowed) == []


def test_the_dockerignore_keeps_var_and_the_venv_out(dockerignore):
    """Everything not allowed is excluded."""
    allowed = {line[1:].rstrip("/") for line in dockerignore if line.startswith("!")}
    assert "*" in dockerignore and not ({"var", ".venv"} & allowed)


def test_the_image_trains_nothing_and_checks_the_tested_model():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "rasa train" not in text
    assert "COPY models/current.tar.gz models/current.tar.gz" in text
    assert re.search(r"ARG MODEL_SHA256\b", text)
    assert '"$MODEL_SHA256  models/current.tar.gz" | sha256sum -c -' in text


# --- migration and images of the base --------------------------------------------------------------

def test_the_migration_runs_once_as_the_job_migrate(objects):
    job = objects[("Job", "migrate")]
    assert deploy.k8s_container(objects, "Job", "migrate")["command"] == deploy.MIGRATION_COMMAND
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_the_pods_wait_for_the_schema_and_none_migrates(objects):
    waiting = []
    for name in ("rasa", "actions"):
        spec = deploy.pod_spec(objects, "Deployment", name)
        if ["python", "-m", "backend.migrate", "--wait"] not in [c.get("command", [])[:4] for c in spec.get("initContainers", [])]:
            waiting.append(f"{name} does not wait")
        if any(c.get("command") == deploy.MIGRATION_COMMAND for c in spec.get("containers", []) + spec.get("initContainers", [])):
            waiting.append(f"{name} migrates itself")
    assert waiting == []


def test_every_image_of_the_base_has_a_tag_or_a_digest(objects):
    """With the base's images: entries applied; the overlays' placeholder digests are allowed here."""
    pinned = copy.deepcopy(objects)
    for entry in yaml.safe_load((K8S / "kustomization.yaml").read_text()).get("images", []):
        image = entry.get("newName", entry["name"]) + (f":{entry['newTag']}" if "newTag" in entry else "") \
            + (f"@{entry['digest']}" if "digest" in entry else "")
        for _, container, _ in deploy.workload_containers(pinned):
            if container["image"] == entry["name"]:
                container["image"] = image
    assert deploy.image_problems(pinned, release=False) == []


def test_postgres_creates_the_database_rasa_uses(objects):
    env = {e["name"]: e.get("value") for e in deploy.k8s_container(objects, "StatefulSet", "postgres")["env"]}
    assert env.get("POSTGRES_DB") == deploy.config(objects)["TRACKER_DB_NAME"]


# --- the release checks, on the base and on every overlay ------------------------------------------

@pytest.mark.parametrize("check", list(RELEASE_SHAPE))
def test_the_base_as_read_holds_the_release_checks(objects, check):
    assert RELEASE_SHAPE[check](objects, False) == []


def test_staging_and_production_overlays_exist():
    assert {p.name for p in deploy.overlays()} >= {"staging", "production"}


@pytest.fixture(scope="module")
def rendered():
    """Target name -> its objects as `kubectl kustomize` renders them (once per module)."""
    return functools.cache(lambda name: release_check.render(dict(RENDERED)[name]))


@KUBECTL
@pytest.mark.parametrize("target", [name for name, _ in RENDERED])
def test_kustomize_renders(rendered, target):
    assert ("Deployment", "rasa") in rendered(target)


@KUBECTL
@pytest.mark.parametrize("check", list(RELEASE_SHAPE))
@pytest.mark.parametrize("target", [name for name, _ in RENDERED])
def test_the_rendered_target_holds_the_release_checks(rendered, target, check):
    assert RELEASE_SHAPE[check](rendered(target), True) == []


# --- the operator's release check (python -m tools.release_check) -----------------------------------

def _release_check(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tools.release_check", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)


def _overlay(folder, base, images):
    """An overlay on another kustomization that sets images (kustomize wants a relative path)."""
    folder.mkdir()
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({"resources": [os.path.relpath(base, folder)],
                                                               "images": images}))
    return folder


@KUBECTL
def test_the_release_check_refuses_the_shipped_placeholder_digests():
    done = _release_check("deploy/overlays/production")
    assert done.returncode == release_check.REFUSED, done.stdout + done.stderr
    refused = [line for line in done.stdout.splitlines() if "not pinned by a real digest" in line]
    containers = release_check.workload_containers(release_check.render(DEPLOY / "overlays" / "production"))
    assert len(refused) == len(containers) and all(line.endswith("(placeholder digest)") for line in refused)
    assert any("Deployment/rasa/rasa: registry.example.go.id/vaksin/asisten-vaksin@sha256:" + "0" * 64 in line
               for line in refused)


IMAGES = ["registry.example.go.id/vaksin/asisten-vaksin", "postgres", "redis", "rclone/rclone"]
DIGEST = "sha256:" + "ab" * 32


@KUBECTL
def test_the_release_check_passes_an_overlay_pinned_by_real_digests(tmp_path, capsys):
    pinned = _overlay(tmp_path / "pinned", DEPLOY / "overlays" / "production",
                      [{"name": name, "digest": DIGEST} for name in IMAGES])
    assert release_check.main([str(pinned)]) == release_check.PINNED
    containers = release_check.workload_containers(release_check.render(pinned))
    assert [c["image"].rsplit("@", 1)[1] for _, c, _ in containers] == [DIGEST] * len(containers)
    assert capsys.readouterr().out == f"{pinned}: every image pinned by a digest ({len(containers)} containers)\n"


@KUBECTL
def test_the_release_check_refuses_an_image_left_at_its_tag(tmp_path, capsys):
    tagged = _overlay(tmp_path / "tagged", K8S, [{"name": name, "digest": DIGEST} for name in IMAGES[:3]])
    assert release_check.main([str(tagged)]) == release_check.REFUSED
    assert capsys.readouterr().out.splitlines() == [
        f"{tagged}: not pinned by a real digest: CronJob/backup/upload: rclone/rclone:1.68.2 (no digest)"]


def test_the_release_check_cannot_check_without_kubectl_or_an_overlay_that_renders(tmp_path):
    done = _release_check("deploy/overlays/production", env={**os.environ, "PATH": str(tmp_path)})
    assert done.returncode == release_check.CANNOT_CHECK and "kubectl not found" in done.stdout
    if shutil.which("kubectl"):
        done = _release_check(tmp_path / "missing")
        assert done.returncode == release_check.CANNOT_CHECK and "does not render" in done.stdout
