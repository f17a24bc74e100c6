"""The release checks (tests/deploy_support.py, tools/release_check.py) catch what would make a
release unsafe: a connection budget over PostgreSQL's max_connections, a volume too small for
the retention period, a floating image tag in the release check, a pod reading a ConfigMap whose
name carries no hash (no rollout on a change), and TLS to PostgreSQL that is not verified. Each
case spoils one thing in the real manifests."""

import copy
import re
import shutil

import pytest

import deploy_support
from deploy_support import ROOT


@pytest.fixture(scope="module")
def check():
    return deploy_support


@pytest.fixture()
def objects(check):
    return check.k8s_objects()


def _postgres_arg(objects, check, name, value):
    args = check.k8s_container(objects, "StatefulSet", "postgres")["args"]
    index = next(i for i, a in enumerate(args) if a.startswith(f"{name}="))
    args[index] = f"{name}={value}"


def test_the_shipped_budget_fits_and_counts_every_pool(check, objects):
    parts, max_connections = check.connection_budget(objects)
    config = check.config(objects)
    rasa_pods = objects[("HorizontalPodAutoscaler", "rasa")]["spec"]["maxReplicas"] + 1  # + the rollout's surge
    per_worker = int(config["SQL_POOL_SIZE"]) + int(config["SQL_MAX_OVERFLOW"]) + 1 \
        + int(config["WHATSAPP_DB_POOL_MAX"]) + 4
    assert parts[next(k for k in parts if k.startswith("rasa "))] == rasa_pods * int(config["SANIC_WORKERS"]) * per_worker
    assert {"retention job", "backup job", "migrate job", "superuser_reserved_connections"} <= set(parts)
    assert sum(parts.values()) <= max_connections


def test_a_budget_over_max_connections_fails(check, objects):
    more_rasa = copy.deepcopy(objects)
    more_rasa[("HorizontalPodAutoscaler", "rasa")]["spec"]["maxReplicas"] = 12
    parts, max_connections = check.connection_budget(more_rasa)
    assert sum(parts.values()) > max_connections
    fewer = copy.deepcopy(objects)
    _postgres_arg(fewer, check, "max_connections", 250)
    problems = check.release_shape_problems(fewer)
    assert [name for name, found in problems.items() if found] == ["connection-budget"]
    assert problems["connection-budget"][0].startswith(f"{sum(check.connection_budget(fewer)[0].values())} "
                                                      "> max_connections 250: rasa ")


def test_an_undersized_volume_or_a_longer_retention_fails(check, objects):
    assert check.volume_problems(objects) == []
    small = copy.deepcopy(objects)
    small[("StatefulSet", "postgres")]["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = "20Gi"
    assert any(p.startswith("volume 21 GB <") for p in check.volume_problems(small))
    longer = copy.deepcopy(objects)
    check.config(longer)["RETENTION_DAYS"] = "90"
    assert any("RETENTION_DAYS=90" in p for p in check.volume_problems(longer))
    weak = copy.deepcopy(objects)
    check.k8s_container(weak, "StatefulSet", "postgres")["resources"]["requests"]["cpu"] = "500m"
    assert any("postgres requests" in p for p in check.volume_problems(weak))


def test_release_mode_refuses_floating_tags_and_placeholder_digests_the_default_accepts(check, objects):
    digest = "sha256:" + "ab" * 32
    pinned = copy.deepcopy(objects)
    for _, container, _ in check.workload_containers(pinned):
        container["image"] = f"registry.example.go.id/x@{digest}"
    assert check.image_problems(pinned, release=True) == []
    floating = copy.deepcopy(pinned)
    check.k8s_container(floating, "Deployment", "redis")["image"] = "redis:7.4-alpine"
    assert check.image_problems(floating, release=True) == ["Deployment/redis/redis: redis:7.4-alpine (no digest)"]
    assert check.image_problems(floating, release=False) == []
    placeholder = copy.deepcopy(pinned)
    check.k8s_container(placeholder, "Deployment", "rasa")["image"] = "registry.example.go.id/x@sha256:" + "0" * 64
    assert [p for p in check.image_problems(placeholder, release=True) if "placeholder digest" in p] \
        == [f"Deployment/rasa/rasa: registry.example.go.id/x@sha256:{'0' * 64} (placeholder digest)"]
    assert check.image_problems(placeholder, release=False) == []
    latest = copy.deepcopy(pinned)
    check.k8s_container(latest, "Deployment", "redis")["image"] = "redis:latest"
    assert check.image_problems(latest, release=False) == ["Deployment/redis/redis: redis:latest (no tag)"]


def test_a_deployment_reading_a_configmap_without_a_hash_fails(check, objects):
    assert check.unhashed_config_refs(objects) == []
    plain = copy.deepcopy(objects)
    plain[("ConfigMap", "extra")] = {"kind": "ConfigMap", "metadata": {"name": "extra"}, "data": {"A": "1"}}
    check.k8s_container(plain, "Deployment", "rasa")["envFrom"].append({"configMapRef": {"name": "extra"}})
    assert check.unhashed_config_refs(plain) == ["Deployment/rasa/rasa reads extra"]


def test_unverified_tls_or_a_pod_without_the_ca_fails(check, objects):
    assert check.tls_problems(objects) == []
    prefer = copy.deepcopy(objects)
    check.config(prefer)["PGSSLMODE"] = "prefer"
    assert "PGSSLMODE=prefer, not verify-full" in check.tls_problems(prefer)
    no_ca = copy.deepcopy(objects)
    container = check.k8s_container(no_ca, "Deployment", "actions")
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "postgres-ca"]
    assert check.tls_problems(no_ca) == [
        "Deployment/actions/actions: the CA (postgres-tls, ca.crt only) not mounted at /etc/postgres-ca"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders the overlays")
def test_the_overlays_render_with_hashed_configmaps_and_release_mode_refuses_their_placeholders(check):
    for overlay in ("staging", "production"):
        objects = check.render(ROOT / "deploy" / "overlays" / overlay)
        names = [n for k, n in objects if k == "ConfigMap"]
        assert any(re.fullmatch(r"vaksin-config-[a-z0-9]{10}", n) for n in names)
        assert check.unhashed_config_refs(objects, rendered=True) == []
        assert check.image_problems(objects, release=False) == []
        assert check.image_problems(objects, release=True)  # the shipped zeros are placeholders


def test_the_doc_states_the_plans_figures(check):
    text = (ROOT / "docs" / "performance.md").read_text()
    figures = check.plan()
    for value in (figures["peak_messages_per_second"], figures["gb_per_day"]):
        assert f"{value:.1f}" in text
    assert f"{check.storage_needed_gb(30):.0f} GB" in text


def test_autoscaler_maxima_that_cannot_carry_the_plans_bursts_fail(check, objects):
    assert not any(check.release_shape_problems(objects).values())
    capped = copy.deepcopy(objects)
    capped[("HorizontalPodAutoscaler", "rasa")]["spec"]["maxReplicas"] = 2  # 2 x 1 CPU x 65% = 1.3 cores
    problems = check.release_shape_problems(capped)
    assert [name for name, found in problems.items() if found] == ["autoscalers-carry-bursts"]
    need = check.plan()["burst_messages_per_second"] * check.PLAN["rasa_cpu_ms"] / 1000
    assert problems["autoscalers-carry-bursts"] == [f"rasa: 1.30 cores at the HPA's maximum and target < {need:.2f}"]


def test_an_otp_cap_below_the_plans_peak_fails(check, objects):
    low = copy.deepcopy(objects)
    check.config(low)["OTP_MAX_SENDS_PER_MINUTE"] = "100"
    problems = check.release_shape_problems(low)
    assert [name for name, found in problems.items() if found] == ["otp-cap"]
    assert problems["otp-cap"] == [f"OTP_MAX_SENDS_PER_MINUTE 100 < the plan's "
                                   f"{check.plan()['otp_per_minute_burst']:.0f} codes a minute"]
