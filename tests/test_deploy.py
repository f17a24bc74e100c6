"""deploy/, read without Docker or a cluster: every YAML file parses, and every setting the code
reads (found by scanning the code, so a new one shows up here) is set for the processes that
read it, in Kubernetes and in compose, or listed in tests/deploy_support.py's LEFT_TO_DEFAULT;
secrets come from the Secret, required ones are not optional, $(VAR) references resolve.

The rest of deploy/: tests/test_deploy_topology.py (ports, probes, public paths, routes),
test_deploy_database.py (roles, backup), test_deploy_release.py (image, migration, overlays),
test_deploy_budget.py (the release checks fail on spoiled manifests)."""

from __future__ import annotations

import pytest
import yaml

import deploy_support as deploy
from deploy_support import K8S, ROOT

PROCESSES = list(deploy.PROCESSES)


@pytest.fixture(scope="module")
def objects():
    return deploy.k8s_objects()


@pytest.fixture(scope="module")
def compose():
    return deploy.compose()


@pytest.fixture(scope="module")
def image_env():
    return deploy.dockerfile()[0]


@pytest.mark.parametrize("path", deploy.yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path}: no document"


def test_the_image_sets_what_every_process_needs(image_env):
    assert deploy.IMAGE_ENV_REQUIRED <= set(image_env), deploy.IMAGE_ENV_REQUIRED - set(image_env)


def test_the_images_pythonpath_is_its_workdir(image_env):
    assert image_env.get("PYTHONPATH") == "/app"


# --- Kubernetes, per process ----------------------------------------------------------------------

def _process(objects, process):
    kind, name = deploy.PROCESSES[process]
    container = deploy.k8s_container(objects, kind, name)
    return container, *deploy.k8s_env(objects, container)


@pytest.mark.parametrize("process", PROCESSES)
def test_k8s_sets_every_variable_the_process_reads(objects, image_env, process):
    _, values, _ = _process(objects, process)
    assert sorted(deploy.needs(process) - set(values) - set(image_env)) == []


@pytest.mark.parametrize("process", PROCESSES)
def test_k8s_secret_refs_name_keys_of_vaksin_secrets(objects, process):
    _, _, secrets = _process(objects, process)
    secret_keys = set(yaml.safe_load((K8S / "secret.example.yaml").read_text())["stringData"])
    assert [f"{n}->{r['key']}" for n, r in secrets.items()
            if r["name"] != "vaksin-secrets" or r["key"] not in secret_keys] == []


@pytest.mark.parametrize("process", PROCESSES)
def test_k8s_required_secrets_come_from_the_secret_not_optional(objects, process):
    _, _, secrets = _process(objects, process)
    assert sorted(n for n in deploy.REQUIRED_SECRETS[process]
                  if n not in secrets or secrets[n].get("optional")) == []


@pytest.mark.parametrize("process", PROCESSES)
def test_k8s_var_references_resolve(objects, process):
    """$(VAR) may refer only to variables defined before it (envFrom, then env in order)."""
    container, _, _ = _process(objects, process)
    defined = set()
    for source in container.get("envFrom", []):
        defined |= set(objects[("ConfigMap", source["configMapRef"]["name"])]["data"])
    unresolved = []
    for item in container.get("env", []):
        unresolved += [f"{item['name']}:$({r})" for r in deploy.K8S_REF.findall(item.get("value", "")) if r not in defined]
        defined.add(item["name"])
    assert unresolved == []


@pytest.mark.parametrize("process", PROCESSES)
def test_k8s_service_links_are_off(objects, process):
    """No injected REDIS_PORT=tcp://... overriding the setting of that name."""
    assert deploy.pod_spec(objects, *deploy.PROCESSES[process]).get("enableServiceLinks") is False


def test_k8s_configmap_holds_no_secret(objects):
    assert [k for k in deploy.config(objects)
            if any(w in k for w in deploy.SECRET_WORDS) and k != "REQUIRE_SECRETS"] == []


def test_k8s_configmap_key_refs_exist(objects):
    refs = [ref["configMapKeyRef"]["key"] for c in deploy.all_containers(objects)
            for e in c.get("env", []) for ref in [e.get("valueFrom") or {}] if "configMapKeyRef" in ref]
    assert [k for k in refs if k not in deploy.config(objects)] == []


# --- compose, per process, and the code's reads in both layouts -------------------------------------

@pytest.mark.parametrize("process", PROCESSES)
def test_compose_sets_every_variable_the_process_reads(compose, image_env, process):
    env = compose["services"][process]["environment"]
    assert sorted(deploy.needs(process) - set(env) - set(image_env)) == []


def _k8s_provided(objects, image_env):
    provided = set(image_env)
    for process in PROCESSES:
        provided |= set(_process(objects, process)[1])
    return provided


def _compose_provided(compose, image_env):
    return set(image_env).union(*(compose["services"][p]["environment"] for p in PROCESSES))


@pytest.mark.parametrize("layout", ["k8s", "compose"])
def test_every_variable_the_code_reads_is_set_or_deliberately_defaulted(objects, compose, image_env, layout):
    reads = deploy.code_env_reads()
    assert "DATABASE_URL" in reads and "OTP_TTL_SECONDS" in reads  # the scan finds the code's reads
    provided = _k8s_provided(objects, image_env) if layout == "k8s" else _compose_provided(compose, image_env)
    everywhere = set(reads) - deploy.DEV_ONLY - set(deploy.LEFT_TO_DEFAULT)
    assert [f"{n} (read in {', '.join(sorted(reads[n]))})" for n in sorted(everywhere - provided)] == []


# --- values that matter in production, in both layouts -------------------------------------------

def _settings(objects, compose, layout):
    return deploy.config(objects) if layout == "k8s" else compose["services"]["actions"]["environment"]


@pytest.mark.parametrize("layout", ["k8s", "compose"])
def test_the_action_server_listens_on_every_interface(objects, compose, layout):
    assert _settings(objects, compose, layout).get("ACTION_SERVER_HOST") == "0.0.0.0"


@pytest.mark.parametrize("layout", ["k8s", "compose"])
def test_the_lock_store_is_redis_for_several_rasa_processes(objects, compose, layout):
    assert _settings(objects, compose, layout).get("LOCK_STORE_TYPE") == "redis"


@pytest.mark.parametrize("layout", ["k8s", "compose"])
def test_otp_sender_is_a_production_sender(objects, compose, layout):
    sender = str(_settings(objects, compose, layout).get("OTP_SENDER"))
    assert "whatsapp" in sender or "http" in sender, sender


@pytest.mark.parametrize("layout", ["k8s", "compose"])
def test_log_level_is_not_debug(objects, compose, layout):
    assert str(_settings(objects, compose, layout).get("LOG_LEVEL", "INFO")).upper() != "DEBUG"


@pytest.mark.parametrize("line", ['os.environ.get("NEW_SETTING")', 'os.environ["NEW_SETTING"]',
                                  'os.getenv("NEW_SETTING", "1")', 'env.get("NEW_SETTING")',
                                  '_int(env, "NEW_SETTING", 5)'])
def test_the_scan_finds_a_read_however_it_is_written(line):
    assert [n for pattern in deploy.ENV_READ for n in pattern.findall(line)] == ["NEW_SETTING"]
