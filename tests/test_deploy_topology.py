"""deploy/'s wiring: commands, ports, Services, probes, ACTION_ENDPOINT_URL and the public paths
agree with each other in Kubernetes and in compose, and with the routes the two Sanic apps
really register (built as the containers build them: Rasa from credentials.yml, no HTTP API);
the Ingress and the compose edge expose exactly the WhatsApp webhook and the certificates."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

import deploy_support as deploy
from deploy_support import DEPLOY, PUBLIC_PATHS, ROOT

APPS = ["rasa", "actions"]
PROBES = ["startupProbe", "readinessProbe", "livenessProbe"]
INGRESSES = sorted(n for k, n in deploy.k8s_objects() if k == "Ingress")
USED_PATHS = deploy.used_paths(deploy.k8s_objects())


@pytest.fixture(scope="module")
def objects():
    return deploy.k8s_objects()


@pytest.fixture(scope="module")
def services():
    return deploy.compose()["services"]


@pytest.fixture(scope="module")
def cmd():
    return deploy.dockerfile()[2]


def _container(objects, app):
    return deploy.k8s_container(objects, "Deployment", app)


def _rasa_command(objects):
    rasa = _container(objects, "rasa")
    return rasa["command"] + rasa["args"]


def _port(objects, app):
    if app == "rasa":
        command = _rasa_command(objects)
        return int(command[command.index("--port") + 1])
    return int(deploy.config(objects)["ACTION_SERVER_PORT"])


# --- Kubernetes: commands and ports ----------------------------------------------------------------

def test_k8s_rasa_runs_the_images_cmd(objects, cmd):
    assert _rasa_command(objects) == cmd


def test_k8s_rasa_has_no_enable_api(objects):
    """Rasa's HTTP API stays off."""
    assert "--enable-api" not in _rasa_command(objects)


def test_k8s_rasa_listens_on_every_interface(objects):
    command = _rasa_command(objects)
    assert command[command.index("--interface") + 1] == "0.0.0.0"


def test_k8s_rasa_port_is_the_container_port(objects):
    assert deploy.port_of(_container(objects, "rasa"), "http") == _port(objects, "rasa")


def test_k8s_actions_runs_the_action_server(objects):
    assert _container(objects, "actions")["command"] == ["python", "-m", "actions.server"]


def test_k8s_action_server_port_is_the_container_port(objects):
    assert deploy.port_of(_container(objects, "actions"), "http") == _port(objects, "actions")


def test_k8s_retention_runs_backend_retention(objects):
    assert deploy.k8s_container(objects, "CronJob", "retention")["command"] == ["python", "-m", "backend.retention"]


# --- Kubernetes: probes, Services, autoscalers -----------------------------------------------------

@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("app", APPS)
def test_k8s_probe_is_an_http_get_on_the_apps_port(objects, app, probe):
    container = _container(objects, app)
    get = container.get(probe, {}).get("httpGet")
    assert get and deploy.port_of(container, get["port"]) == _port(objects, app)


@pytest.mark.parametrize("app", APPS)
def test_k8s_service_selects_the_pods_and_targets_the_port(objects, app):
    svc, svc_port = deploy.service_port(objects, app, _port(objects, app))
    assert svc["selector"].items() <= objects[("Deployment", app)]["spec"]["template"]["metadata"]["labels"].items()
    assert deploy.port_of(_container(objects, app), svc_port["targetPort"]) == _port(objects, app)


@pytest.mark.parametrize("app", APPS)
def test_k8s_autoscaler_scales_the_deployment_on_requested_cpu(objects, app):
    hpa = objects[("HorizontalPodAutoscaler", app)]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == app
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "cpu" in _container(objects, app)["resources"]["requests"]
    assert hpa["spec"]["minReplicas"] <= objects[("Deployment", app)]["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]


def test_k8s_rasa_startup_probe_allows_two_minutes_for_the_model(objects):
    probe = _container(objects, "rasa")["startupProbe"]
    assert probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"] >= 120


# --- Kubernetes: how the services find each other ---------------------------------------------------

def test_action_endpoint_url_is_the_actions_service_webhook(objects):
    endpoint = urlsplit(deploy.config(objects)["ACTION_ENDPOINT_URL"])
    assert (endpoint.hostname, endpoint.port, endpoint.path) == ("actions", _port(objects, "actions"), "/webhook")


def test_redis_host_and_port_name_the_redis_service(objects):
    config = deploy.config(objects)
    assert deploy.service_port(objects, config["REDIS_HOST"], int(config["REDIS_PORT"]))[1]


def test_k8s_redis_requires_the_password_rasa_sends(objects):
    """REDIS_PASSWORD, the same Secret key, not optional."""
    redis = deploy.k8s_container(objects, "Deployment", "redis")
    _, redis_secrets = deploy.k8s_env(objects, redis)
    _, rasa_secrets = deploy.k8s_env(objects, _container(objects, "rasa"))
    assert deploy.requires_password(redis.get("args", []), "$(REDIS_PASSWORD)")
    assert redis_secrets.get("REDIS_PASSWORD") == rasa_secrets.get("REDIS_PASSWORD")
    assert not redis_secrets["REDIS_PASSWORD"].get("optional")


def test_tracker_db_host_and_port_name_the_postgres_service(objects):
    config = deploy.config(objects)
    assert deploy.service_port(objects, config["TRACKER_DB_HOST"], int(config["TRACKER_DB_PORT"]))[1]


# --- public paths: the Ingress ---------------------------------------------------------------------

def _ingresses(objects):
    return [o for (k, _), o in objects.items() if k == "Ingress"]


@pytest.mark.parametrize("name", INGRESSES)
def test_k8s_ingress_has_tls_for_its_host(objects, name):
    spec = objects[("Ingress", name)]["spec"]
    assert {h for t in spec.get("tls", []) for h in t["hosts"]} >= {r["host"] for r in spec["rules"]}


def test_k8s_ingress_exposes_exactly_the_whatsapp_webhook_and_the_certificates(objects):
    exposed = {}
    for ingress in _ingresses(objects):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                exposed[path["path"]] = backend["name"]
                deploy.service_port(objects, backend["name"], backend["port"].get("number") or backend["port"].get("name"))
    assert exposed == PUBLIC_PATHS


def test_public_base_url_is_https_on_the_ingress_host(objects):
    url = urlsplit(deploy.config(objects)["PUBLIC_BASE_URL"])
    hosts = {r["host"] for ingress in _ingresses(objects) for r in ingress["spec"]["rules"]}
    assert url.scheme == "https" and url.hostname in hosts


def test_k8s_certificates_ingress_writes_no_access_log(objects):
    """The path is the token."""
    ingresses = [o for o in _ingresses(objects)
                 if any(p["path"] == "/certificates/" for r in o["spec"]["rules"] for p in r["http"]["paths"])]
    assert ingresses
    assert all(o["metadata"].get("annotations", {}).get("nginx.ingress.kubernetes.io/enable-access-log") == "false"
               for o in ingresses)


# --- public paths: the compose edge, and compose's wiring -------------------------------------------

@pytest.fixture(scope="module")
def nginx():
    return (DEPLOY / "compose" / "nginx.conf").read_text()


def test_compose_edge_exposes_exactly_the_same_two_paths(objects, nginx):
    ports = {app: _port(objects, app) for app in APPS}
    assert deploy.nginx_locations(nginx, ports) == PUBLIC_PATHS
    assert re.search(r"location\s+/\s*\{\s*return 404;", nginx)


def test_compose_edge_writes_no_access_log_for_certificate_links(nginx):
    assert re.search(r"access_log off;", nginx)
    assert "$request " not in nginx and "$request_uri" not in nginx


def test_compose_publishes_only_the_edge_and_rasa_on_loopback(services):
    published = {name: s.get("ports", []) for name, s in services.items() if s.get("ports")}
    assert set(published) <= {"edge", "rasa"}
    assert all(str(p).startswith("127.0.0.1:") for p in published.get("rasa", []))


def test_compose_rasa_runs_the_images_cmd(services, cmd):
    assert services["rasa"]["command"] == cmd


def test_compose_actions_runs_the_action_server(services):
    assert services["actions"]["command"] == ["python", "-m", "actions.server"]


def test_compose_action_endpoint_url_names_the_actions_service_and_port(services):
    endpoint = urlsplit(services["rasa"]["environment"]["ACTION_ENDPOINT_URL"])
    assert endpoint.hostname in services
    assert endpoint.port == int(services["actions"]["environment"]["ACTION_SERVER_PORT"])


def test_compose_redis_and_tracker_db_hosts_name_services(services):
    env = services["rasa"]["environment"]
    assert env["REDIS_HOST"] in services and env["TRACKER_DB_HOST"] in services


def test_compose_several_rasa_workers_only_with_the_redis_lock_store(services):
    env = services["rasa"]["environment"]
    assert env["LOCK_STORE_TYPE"] == "redis" or str(env["SANIC_WORKERS"]) == "1"


def test_compose_redis_requires_the_password_rasa_sends(services):
    """REDIS_PASSWORD from deploy/.env, required by both."""
    assert deploy.requires_password(services["redis"]["command"], "${REDIS_PASSWORD:?")
    assert services["rasa"]["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")


# --- the routes the apps really register ------------------------------------------------------------

@pytest.fixture(scope="module")
def routes():
    """Both Sanic apps built as the containers build them: app -> its route paths."""
    import contextlib
    import io
    import warnings

    from sanic import Sanic

    Sanic.test_mode = True  # other tests build apps of the same names in this process
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        from rasa.core import run

        from actions.server import build_app

        channels = run.create_http_input_channels(None, str(ROOT / "credentials.yml"))
        apps = {"rasa": run.configure_app(channels, enable_api=False, port=5005), "actions": build_app()}
    return {name: {"/" + r.path.strip("/") if r.path.strip("/") else "/" for r in app.router.routes}
            for name, app in apps.items()}


@pytest.mark.parametrize("app,path", sorted((app, path) for app, paths in USED_PATHS.items() for path in paths))
def test_the_app_has_a_route_for_each_probed_called_or_exposed_path(routes, app, path):
    if path.endswith("/"):  # a prefix: some route must live under it
        assert any(r.startswith(path) for r in routes[app]), sorted(routes[app])
    else:
        assert path in routes[app], sorted(routes[app])


def test_the_rasa_app_has_no_http_api_routes(routes):
    assert "/webhooks/whatsapp/webhook" in routes["rasa"]
    assert not [r for r in routes["rasa"] if r.startswith(("/conversations", "/model"))]
