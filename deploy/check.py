"""Offline checks of deploy/: what can be proven here without Docker or a cluster.

    .venv/bin/python deploy/check.py            # everything (builds both Sanic apps: ~20 s)
    .venv/bin/python deploy/check.py --fast     # without building the apps (no route checks)

- every YAML file of deploy/ parses;
- every environment variable the code reads (found by scanning the code, so a new setting
  shows up here) is set for the processes that read it, in Kubernetes and in compose, or is
  listed below as deliberately left to its default;
- secrets come from the Secret, required ones are not optional, $(VAR) references resolve;
- ports, Services, ACTION_ENDPOINT_URL, probe paths and public paths agree with each other
  and with the routes the two Sanic apps really register (Rasa from credentials.yml);
- the Ingress and the compose edge expose exactly the WhatsApp webhook and the certificates;
- no workload connects as the PostgreSQL superuser or the schema's owner but the migration;
  each service connects as its own role (backend/privileges.py) with that role's password;
- the Dockerfile copies what the commands and the configuration import;
- a nightly backup CronJob dumps as the read-only backup role, with the server's own major
  version of pg_dump, and uploads encrypted off-site, keeping 30 daily and 12 monthly.

Prints one line per check and `N passed, N failed`; exit status 1 when anything failed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
K8S = DEPLOY / "k8s"

# The only paths reachable from outside (docs/whatsapp.md, actions/server.py).
PUBLIC_PATHS = {"/webhooks/whatsapp/webhook": "rasa", "/certificates/": "actions"}

# Read by the code, deliberately not set by deploy/: the defaults are right in production.
LEFT_TO_DEFAULT = {
    "OTP_OUTBOX": "only for OTP_SENDER=outbox (development)",
    "OTP_DELIVERY_RETRY_SECONDS": "1 s, doubling to 60 s, until the code expires",
    "WHATSAPP_API_BASE_URL": "graph.facebook.com; set only for the fake Graph API",
    "WHATSAPP_HTTP_TIMEOUT_SECONDS": "10 s",
    "WHATSAPP_RETRY_ATTEMPTS": "4",
    "WHATSAPP_RETRY_BASE_SECONDS": "0.5 s",
    "WHATSAPP_RETRY_MAX_SECONDS": "8 s",
    "WHATSAPP_DEDUPE_DAYS": "7, Meta's redelivery window",
    "WHATSAPP_PENDING_POLL_SECONDS": "2 s between looks for messages kept during an outage",
    "WHATSAPP_PENDING_RETRY_SECONDS": "5 s before a kept message is tried again",
    "WHATSAPP_PENDING_LEASE_SECONDS": "60 s one process holds a kept message",
    "NLU_CACHE_SIZE": "4096 texts per Rasa process (docs/performance.md)",
    "TRACKER_CACHE_SIZE": "512 conversations per Rasa process",
    "REPLAY_CACHE_SIZE": "512 conversations per Rasa process (docs/performance.md)",
    "RASA_PATCHES": "all: every speed patch of rasa_server/patches/ (docs/performance.md)",
    "TRACKER_SYNCHRONOUS_COMMIT": "off for conversation events only (docs/performance.md)",
    "RASA_SERVER_ALLOW_API": "unset: Rasa's HTTP API refused; only the simulator opts in (docs/platform.md)",
    "PROMETHEUS_MULTIPROC_DIR": "a fresh folder under /tmp (an emptyDir) per Rasa start, for its workers' metrics",
}
# Read only by the development launcher (tools/stack.py), never in a container.
DEV_ONLY = {"RASA_PORT", "WORKERS"}
# Set by the image (deploy/Dockerfile ENV) for every process.
IMAGE_ENV_REQUIRED = {"PYTHONPATH", "VAR_DIR", "HOME", "RASA_TELEMETRY_ENABLED"}

# What each process needs set (besides endpoints.yml's variables for Rasa).
NEEDS = {
    "rasa": {"DATABASE_URL", "SANIC_WORKERS", "SQL_POOL_SIZE", "SQL_MAX_OVERFLOW", "TURN_TIMEOUT_SECONDS",
             "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN", "WHATSAPP_ACCESS_TOKEN", "WHATSAPP_PHONE_NUMBER_ID",
             "LOG_LEVEL"},
    "actions": {"DATABASE_URL", "ACTION_SERVER_HOST", "ACTION_SERVER_PORT", "ACTION_SERVER_TOKEN", "OTP_HASH_KEY",
                "CERTIFICATE_SIGNING_KEY", "CERTIFICATE_PUBLIC_KEYS", "PUBLIC_BASE_URL", "OTP_SENDER", "DB_POOL_MAX", "DB_STATEMENT_TIMEOUT_MS", "SMS_GATEWAY_URL",
                "SMS_GATEWAY_TOKEN", "WHATSAPP_ACCESS_TOKEN", "WHATSAPP_PHONE_NUMBER_ID", "WHATSAPP_OTP_TEMPLATE",
                "OTP_TTL_SECONDS", "OTP_MAX_ATTEMPTS", "OTP_RESEND_SECONDS", "OTP_MAX_SENDS_PER_HOUR",
                "OTP_MAX_SENDS_PER_MINUTE", "SESSION_TTL_SECONDS", "CERTIFICATE_LINK_TTL_SECONDS", "LOG_LEVEL"},
    "retention": {"DATABASE_URL", "RETENTION_DAYS"},
}
# Must come from the Secret (k8s), never from the ConfigMap, and must not be optional.
REQUIRED_SECRETS = {"rasa": {"TRACKER_DB_PASSWORD", "ACTION_SERVER_TOKEN", "REDIS_PASSWORD"},
                    "actions": {"DB_PASSWORD", "ACTION_SERVER_TOKEN", "OTP_HASH_KEY",
                                "CERTIFICATE_SIGNING_KEY"},
                    "retention": {"DB_PASSWORD"}}
# Database roles (backend/privileges.py, k8s/postgres/roles.psql): the role each container
# connects as, and the Secret key of its password. The superuser's and the owner's passwords
# are for the postgres server and the migration only.
DB_ROLES = {("Deployment", "actions", "migrate"): ("vaksin_owner", "DB_OWNER_PASSWORD"),
            ("Deployment", "actions", "actions"): ("vaksin_actions", "DB_ACTIONS_PASSWORD"),
            ("Deployment", "rasa", "wait-for-schema"): ("vaksin_rasa", "DB_RASA_PASSWORD"),
            ("Deployment", "rasa", "rasa"): ("vaksin_rasa", "DB_RASA_PASSWORD"),
            ("CronJob", "retention", "retention"): ("vaksin_retention", "DB_RETENTION_PASSWORD"),
            ("CronJob", "backup", "dump"): ("vaksin_backup", "DB_BACKUP_PASSWORD")}
COMPOSE_DB_ROLES = {"migrate": "vaksin_owner", "actions": "vaksin_actions", "rasa": "vaksin_rasa",
                    "retention": "vaksin_retention"}
PRIVILEGED_KEYS = {"POSTGRES_PASSWORD", "DB_OWNER_PASSWORD"}
MIGRATION_COMMAND = ["python", "-m", "backend.migrate"]
SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET", "HASH_KEY")

RUNTIME_CODE = ["actions", "backend", "rest", "whatsapp", "nlu_components", "rasa_server"]
ENV_READ = [
    re.compile(r"os\.environ(?:\.get)?\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']"),
    re.compile(r"os\.environ\[\s*[\"']([A-Z][A-Z0-9_]+)[\"']\s*\]"),
    re.compile(r"os\.getenv\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']"),
    re.compile(r"\benv\.get\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']"),
    re.compile(r"_(?:int|secret|number)\(\s*env,\s*[\"']([A-Z][A-Z0-9_]+)[\"']"),
]
PLACEHOLDER_VAR = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
K8S_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

passed: list[str] = []
failed: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> bool:
    (passed if ok else failed).append(name)
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""))
    return ok


# --- reading ----------------------------------------------------------------------------------

def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))


def k8s_objects() -> dict[tuple[str, str], dict]:
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def code_env_reads() -> dict[str, set[str]]:
    """Variable -> files that read it, over the runtime code and Rasa's configuration."""
    found: dict[str, set[str]] = {}
    files = [p for d in RUNTIME_CODE for p in (ROOT / d).rglob("*.py")]
    files += [ROOT / "tools" / "stack.py"]  # backend.retention takes database_url() from it
    for path in files:
        if path.name == "fake_graph.py":  # a development stand-in for Meta's API
            continue
        text = path.read_text()
        for pattern in ENV_READ:
            for name in pattern.findall(text):
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    for name in ("endpoints.yml", "credentials.yml"):
        for var in PLACEHOLDER_VAR.findall((ROOT / name).read_text()):
            found.setdefault(var, set()).add(name)
    return found


def endpoints_vars() -> set[str]:
    return set(PLACEHOLDER_VAR.findall((ROOT / "endpoints.yml").read_text()))


def dockerfile() -> tuple[dict[str, str], list[str], list[str]]:
    """(ENV of the image, COPY sources, CMD)."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    copies: list[str] = []
    cmd: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("ENV "):
            for key, value in re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", line):
                env[key] = value
        elif line.startswith("COPY ") and "--from" not in line:
            copies += line.split()[1:-1]
        elif line.startswith("CMD "):
            cmd = yaml.safe_load(line[4:])
    return env, copies, cmd


def k8s_container(objects: dict, kind: str, name: str) -> dict:
    spec = objects[(kind, name)]["spec"]
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]["containers"][0]


def k8s_env(objects: dict, container: dict) -> tuple[dict[str, str | None], dict[str, dict]]:
    """(name -> literal value or None when from a Secret, name -> secretKeyRef)."""
    values: dict[str, str | None] = {}
    secrets: dict[str, dict] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            values.update(objects[("ConfigMap", ref["name"])]["data"])
    for item in container.get("env", []):
        if "value" in item:
            values[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"].get("secretKeyRef")
            if ref:
                secrets[item["name"]] = ref
            values[item["name"]] = None
    return values, secrets


# --- the checks -------------------------------------------------------------------------------

def check_yaml() -> None:
    for path in yaml_files():
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
            check(f"YAML parses: {path.relative_to(ROOT)} ({len(docs)} documents)", bool(docs))
        except yaml.YAMLError as exc:
            check(f"YAML parses: {path.relative_to(ROOT)}", False, str(exc).splitlines()[0])


def check_env(objects: dict, compose: dict, image_env: dict[str, str]) -> None:
    reads = code_env_reads()
    check("the image sets " + ", ".join(sorted(IMAGE_ENV_REQUIRED)), IMAGE_ENV_REQUIRED <= set(image_env),
          str(IMAGE_ENV_REQUIRED - set(image_env)))
    check("the image's PYTHONPATH is its WORKDIR /app", image_env.get("PYTHONPATH") == "/app")
    needs = {proc: names | (endpoints_vars() if proc == "rasa" else set()) for proc, names in NEEDS.items()}

    config = objects[("ConfigMap", "vaksin-config")]["data"]
    secret_keys = set(yaml.safe_load((K8S / "secret.example.yaml").read_text())["stringData"])
    containers = {"rasa": ("Deployment", "rasa"), "actions": ("Deployment", "actions"),
                  "retention": ("CronJob", "retention")}
    k8s_set: set[str] = set(image_env)
    for proc, (kind, name) in containers.items():
        container = k8s_container(objects, kind, name)
        values, secrets = k8s_env(objects, container)
        k8s_set |= set(values)
        missing = needs[proc] - set(values) - set(image_env)
        check(f"k8s {proc}: every variable it reads is set", not missing, ", ".join(sorted(missing)))
        bad_refs = [f"{n}->{r['key']}" for n, r in secrets.items()
                    if r["name"] != "vaksin-secrets" or r["key"] not in secret_keys]
        check(f"k8s {proc}: secretKeyRefs name keys of vaksin-secrets", not bad_refs, ", ".join(bad_refs))
        optional = [n for n in REQUIRED_SECRETS[proc] if n not in secrets or secrets[n].get("optional")]
        check(f"k8s {proc}: {', '.join(sorted(REQUIRED_SECRETS[proc]))} from the Secret, not optional",
              not optional, ", ".join(optional))
        # $(VAR) may refer only to variables defined before it (envFrom, then env in order).
        defined = set()
        for source in container.get("envFrom", []):
            defined |= set(objects[("ConfigMap", source["configMapRef"]["name"])]["data"])
        unresolved = []
        for item in container.get("env", []):
            unresolved += [f"{item['name']}:$({r})" for r in K8S_REF.findall(item.get("value", "")) if r not in defined]
            defined.add(item["name"])
        check(f"k8s {proc}: $(VAR) references resolve", not unresolved, ", ".join(unresolved))
        check(f"k8s {proc}: enableServiceLinks is off (no injected REDIS_PORT=tcp://...)",
              _pod_spec(objects, kind, name).get("enableServiceLinks") is False)

    leaked = [k for k in config if any(w in k for w in SECRET_WORDS) and k != "REQUIRE_SECRETS"]
    check("k8s ConfigMap holds no secret", not leaked, ", ".join(leaked))
    configmap_refs = [ref["configMapKeyRef"]["key"] for c in _all_containers(objects)
                      for e in c.get("env", []) for ref in [e.get("valueFrom") or {}] if "configMapKeyRef" in ref]
    check("k8s configMapKeyRefs exist", all(k in config for k in configmap_refs), str(configmap_refs))

    services = compose["services"]
    compose_set: set[str] = set()
    for proc in ("rasa", "actions", "retention"):
        env = services[proc]["environment"]
        compose_set |= set(env)
        missing = needs[proc] - set(env) - set(image_env)
        check(f"compose {proc}: every variable it reads is set", not missing, ", ".join(sorted(missing)))

    everywhere = set(reads) - DEV_ONLY - set(LEFT_TO_DEFAULT)
    for where, provided in (("k8s", k8s_set), ("compose", compose_set)):
        missing = sorted(everywhere - provided - set(image_env))
        check(f"{where}: every variable the code reads is set or deliberately defaulted", not missing,
              "; ".join(f"{n} (read in {', '.join(sorted(reads[n]))})" for n in missing))

    # Values that matter.
    for where, env in (("k8s", config), ("compose", services["actions"]["environment"])):
        check(f"{where}: the action server listens on 0.0.0.0", env.get("ACTION_SERVER_HOST") == "0.0.0.0")
        check(f"{where}: Redis lock store (several Rasa processes)", env.get("LOCK_STORE_TYPE") == "redis")
        sender = str(env.get("OTP_SENDER"))
        check(f"{where}: OTP_SENDER is a production sender", "whatsapp" in sender or "http" in sender, sender)
        check(f"{where}: LOG_LEVEL is not DEBUG", str(env.get("LOG_LEVEL", "INFO")).upper() != "DEBUG")


def _pod_spec(objects: dict, kind: str, name: str) -> dict:
    spec = objects[(kind, name)]["spec"]
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def _all_containers(objects: dict) -> list[dict]:
    out = []
    for (kind, name) in objects:
        if kind in ("Deployment", "StatefulSet", "CronJob"):
            out += _pod_spec(objects, kind, name)["containers"]
    return out


def _port_of(container: dict, name_or_number) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == name_or_number)


def _service_port(objects: dict, service: str, port) -> tuple[dict, dict]:
    svc = objects[("Service", service)]["spec"]
    for p in svc["ports"]:
        if p["port"] == port or p.get("name") == port:
            return svc, p
    raise KeyError(f"{service}:{port}")


def check_topology(objects: dict, compose: dict, cmd: list[str]) -> dict[str, set[str]]:
    """Ports, Services, probes and public paths; returns the paths probed or exposed per app."""
    config = objects[("ConfigMap", "vaksin-config")]["data"]
    used_paths: dict[str, set[str]] = {"rasa": set(), "actions": set()}
    rasa = k8s_container(objects, "Deployment", "rasa")
    actions = k8s_container(objects, "Deployment", "actions")
    rasa_cmd = rasa["command"] + rasa["args"]
    check("k8s rasa runs the image's CMD", rasa_cmd == cmd, f"{rasa_cmd} != {cmd}")
    check("k8s rasa: no --enable-api (Rasa's HTTP API stays off)", "--enable-api" not in rasa_cmd)
    check("k8s rasa: --interface 0.0.0.0", rasa_cmd[rasa_cmd.index("--interface") + 1] == "0.0.0.0")
    rasa_port = int(rasa_cmd[rasa_cmd.index("--port") + 1])
    check("k8s rasa: --port is the containerPort", _port_of(rasa, "http") == rasa_port)
    check("k8s actions runs python -m actions.server", actions["command"] == ["python", "-m", "actions.server"])
    actions_port = int(config["ACTION_SERVER_PORT"])
    check("k8s actions: ACTION_SERVER_PORT is the containerPort", _port_of(actions, "http") == actions_port)
    retention = k8s_container(objects, "CronJob", "retention")
    check("k8s retention runs python -m backend.retention",
          retention["command"] == ["python", "-m", "backend.retention"])

    for app, container, port in (("rasa", rasa, rasa_port), ("actions", actions, actions_port)):
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = container.get(probe, {}).get("httpGet")
            if check(f"k8s {app}: {probe} is an HTTP GET on its port", bool(get) and _port_of(container, get["port"]) == port):
                used_paths[app].add(get["path"])
        svc, svc_port = _service_port(objects, app, port)
        check(f"k8s Service {app} selects the pods and targets the port",
              svc["selector"].items() <= objects[("Deployment", app)]["spec"]["template"]["metadata"]["labels"].items()
              and _port_of(container, svc_port["targetPort"]) == port)
        hpa = objects[("HorizontalPodAutoscaler", app)]["spec"]
        check(f"k8s HPA {app}: autoscaling/v2 on CPU of the Deployment, with CPU requested",
              objects[("HorizontalPodAutoscaler", app)]["apiVersion"] == "autoscaling/v2"
              and hpa["scaleTargetRef"]["name"] == app
              and hpa["metrics"][0]["resource"]["name"] == "cpu"
              and "cpu" in container["resources"]["requests"]
              and hpa["minReplicas"] <= objects[("Deployment", app)]["spec"]["replicas"] <= hpa["maxReplicas"])
    check("k8s rasa: the startup probe allows >= 2 min for loading the model",
          (lambda p: p.get("initialDelaySeconds", 0) + p["periodSeconds"] * p["failureThreshold"])(rasa["startupProbe"]) >= 120)

    endpoint = urlsplit(config["ACTION_ENDPOINT_URL"])
    check("ACTION_ENDPOINT_URL is http://<actions Service>:<its port>/webhook",
          endpoint.hostname == "actions" and endpoint.port == actions_port and endpoint.path == "/webhook")
    used_paths["actions"].add("/webhook")
    _, redis_port = _service_port(objects, config["REDIS_HOST"], int(config["REDIS_PORT"]))
    check("REDIS_HOST/REDIS_PORT name the redis Service", bool(redis_port))
    redis = k8s_container(objects, "Deployment", "redis")
    _, redis_secrets = k8s_env(objects, redis)
    _, rasa_secrets = k8s_env(objects, k8s_container(objects, "Deployment", "rasa"))
    check("k8s redis requires the password Rasa sends (REDIS_PASSWORD, same Secret key)",
          _requires_password(redis.get("args", []), "$(REDIS_PASSWORD)")
          and redis_secrets.get("REDIS_PASSWORD") == rasa_secrets.get("REDIS_PASSWORD")
          and not redis_secrets["REDIS_PASSWORD"].get("optional"))
    _, pg_port = _service_port(objects, config["TRACKER_DB_HOST"], int(config["TRACKER_DB_PORT"]))
    check("TRACKER_DB_HOST/PORT name the postgres Service", bool(pg_port))

    # Public paths: the Ingress ...
    exposed: dict[str, str] = {}
    hosts = set()
    for (kind, _), obj in objects.items():
        if kind != "Ingress":
            continue
        for rule in obj["spec"]["rules"]:
            hosts.add(rule["host"])
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                exposed[path["path"]] = backend["name"]
                port = backend["port"].get("number") or backend["port"].get("name")
                _service_port(objects, backend["name"], port)
        tls_hosts = {h for t in obj["spec"].get("tls", []) for h in t["hosts"]}
        check(f"k8s Ingress {obj['metadata']['name']}: TLS for its host", tls_hosts >= {r["host"] for r in obj["spec"]["rules"]})
    check("k8s Ingress exposes exactly the WhatsApp webhook (rasa) and /certificates/ (actions)",
          exposed == PUBLIC_PATHS, str(exposed))
    check("PUBLIC_BASE_URL is https on the Ingress host",
          urlsplit(config["PUBLIC_BASE_URL"]).scheme == "https" and urlsplit(config["PUBLIC_BASE_URL"]).hostname in hosts)
    cert_ingress = [o for (k, _), o in objects.items() if k == "Ingress"
                    and any(p["path"] == "/certificates/" for r in o["spec"]["rules"] for p in r["http"]["paths"])]
    check("k8s: the certificates Ingress writes no access log (the path is the token)",
          all(o["metadata"].get("annotations", {}).get("nginx.ingress.kubernetes.io/enable-access-log") == "false"
              for o in cert_ingress))
    for path in PUBLIC_PATHS:
        used_paths[PUBLIC_PATHS[path]].add(path)

    # ... and the compose edge.
    nginx = (DEPLOY / "compose" / "nginx.conf").read_text()
    locations = {}
    for block in re.split(r"\blocation\s+", nginx)[1:]:
        found = re.match(r"(?:=|\^~)\s+(\S+)\s*\{", block)
        upstream = re.search(r"set\s+\$\w+\s+http://([\w-]+):(\d+);\s*proxy_pass\s+\$\w+;", block)
        if found and upstream:
            host, port = upstream.group(1), int(upstream.group(2))
            ports = {"rasa": rasa_port, "actions": actions_port}
            locations[found.group(1)] = host if ports.get(host) == port else f"{host}:{port}?"
    check("compose edge (nginx) exposes exactly the same two paths",
          locations == PUBLIC_PATHS and re.search(r"location\s+/\s*\{\s*return 404;", nginx) is not None, str(locations))
    check("compose edge: no access log for certificate links",
          re.search(r"access_log off;", nginx) is not None and "$request " not in nginx and "$request_uri" not in nginx)
    services = compose["services"]
    published = {name: s.get("ports", []) for name, s in services.items() if s.get("ports")}
    check("compose publishes only the edge, and Rasa on 127.0.0.1",
          set(published) <= {"edge", "rasa"} and all(str(p).startswith("127.0.0.1:") for p in published.get("rasa", [])),
          str(published))
    check("compose rasa runs the image's CMD", services["rasa"]["command"] == cmd)
    check("compose actions runs python -m actions.server", services["actions"]["command"] == ["python", "-m", "actions.server"])
    env = services["rasa"]["environment"]
    endpoint = urlsplit(env["ACTION_ENDPOINT_URL"])
    check("compose ACTION_ENDPOINT_URL names the actions service and port",
          endpoint.hostname in services and endpoint.port == int(services["actions"]["environment"]["ACTION_SERVER_PORT"]))
    check("compose REDIS_HOST and TRACKER_DB_HOST name services",
          env["REDIS_HOST"] in services and env["TRACKER_DB_HOST"] in services)
    check("compose: several Rasa workers only with the Redis lock store",
          env["LOCK_STORE_TYPE"] == "redis" or str(env["SANIC_WORKERS"]) == "1")
    check("compose redis requires the password Rasa sends (REDIS_PASSWORD from deploy/.env)",
          _requires_password(services["redis"]["command"], "${REDIS_PASSWORD:?")
          and env["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?"))
    return used_paths


def _workload_containers(objects: dict) -> list[tuple[tuple[str, str, str], dict, bool]]:
    """((kind, workload, container), container, is_init) for every container of every workload."""
    out = []
    for (kind, name) in objects:
        if kind in ("Deployment", "StatefulSet", "CronJob", "Job", "DaemonSet"):
            spec = _pod_spec(objects, kind, name)
            out += [((kind, name, c["name"]), c, False) for c in spec.get("containers", [])]
            out += [((kind, name, c["name"]), c, True) for c in spec.get("initContainers", [])]
    return out


def _url_user(url: str) -> str | None:
    # Not urlsplit: compose's ${VAR:?message} in the password may hold a "/".
    found = re.match(r"postgres(?:ql)?://([^:@/]+)[:@]", url)
    return found.group(1) if found else None


def _expand(value: str, values: dict) -> str:
    return K8S_REF.sub(lambda m: values.get(m.group(1)) or m.group(0), value)


def check_database_roles(objects: dict, compose: dict) -> None:
    """No workload connects as the superuser or the owner but the migration; each service as
    its own role, with that role's password."""
    sys.path.insert(0, str(ROOT))
    from backend import privileges

    roles = {privileges.OWNER, *privileges.GRANTS}
    created = set(re.findall(r"'(vaksin_\w+)'", (K8S / "postgres" / "roles.psql").read_text()))
    check("k8s/postgres/roles.psql creates every role of backend/privileges.py", roles <= created,
          str(roles - created))
    check("each service has a role of its own, none the owner",
          len({r for r, _ in DB_ROLES.values()} - {privileges.OWNER}) == len(privileges.GRANTS)
          and {r for r, _ in DB_ROLES.values()} == roles)
    misused, wrong_role = [], []
    for key, container, is_init in _workload_containers(objects):
        values, secrets = k8s_env(objects, container)
        keys = {ref["key"] for ref in secrets.values()}
        label = "/".join(key[1:])
        if key == ("StatefulSet", "postgres", "postgres"):
            continue  # the server itself; it creates the roles (postgres/10-roles.sh)
        if keys & PRIVILEGED_KEYS and not (is_init and key in DB_ROLES and DB_ROLES[key][0] == privileges.OWNER
                                           and container.get("command") == MIGRATION_COMMAND
                                           and "POSTGRES_PASSWORD" not in keys):
            misused.append(f"{label} ({', '.join(sorted(keys & PRIVILEGED_KEYS))})")
        if key in DB_ROLES:
            role, secret_key = DB_ROLES[key]
            urls = [_expand(values.get(n) or "", values) for n in ("DATABASE_URL",)]
            users = {_url_user(u) for u in urls if u} | (
                {values["TRACKER_DB_USER"]} if "TRACKER_DB_USER" in values and key[1] == "rasa" else set())
            password_keys = {ref["key"] for name, ref in secrets.items() if "PASSWORD" in ref["key"]
                             and ref["key"].startswith(("DB_", "POSTGRES"))}
            if users != {role} or password_keys != {secret_key}:
                wrong_role.append(f"{label}: {sorted(users)} with {sorted(password_keys)}")
        elif "DATABASE_URL" in values or "TRACKER_DB_USER" in values:
            wrong_role.append(f"{label}: connects to the database but has no role in DB_ROLES")
    check("k8s: only the postgres server and the migration (initContainer migrate) hold the superuser's "
          "or the owner's password", not misused, "; ".join(misused))
    check("k8s: every container connects as its own role with that role's password", not wrong_role,
          "; ".join(wrong_role))
    missing = [key for key in DB_ROLES if key not in {k for k, _, _ in _workload_containers(objects)}]
    check("k8s: the migration and every service's container exist", not missing, str(missing))

    services = compose["services"]
    misused, wrong_role = [], []
    for name, service in services.items():
        text = yaml.safe_dump(service)
        privileged = [k for k in PRIVILEGED_KEYS if "${" + k in text]
        if privileged and name not in ("postgres", "migrate"):
            misused.append(f"{name} ({', '.join(privileged)})")
        env = service.get("environment") or {}
        if name in COMPOSE_DB_ROLES:
            role = COMPOSE_DB_ROLES[name]
            users = {_url_user(str(env.get("DATABASE_URL", "")))} | (
                {env["TRACKER_DB_USER"]} if "TRACKER_DB_USER" in env else set())
            passwords = set(re.findall(r"\$\{(DB_\w+_PASSWORD|POSTGRES_PASSWORD)", text))
            if users != {role} or passwords != {f"DB_{role.split('_', 1)[1].upper()}_PASSWORD"}:
                wrong_role.append(f"{name}: {sorted(map(str, users))} with {sorted(passwords)}")
        elif "DATABASE_URL" in env or "TRACKER_DB_USER" in env:
            wrong_role.append(f"{name}: connects to the database without a role of its own")
    check("compose: only postgres and migrate hold the superuser's or the owner's password", not misused,
          "; ".join(misused))
    check("compose: every service connects as its own role with that role's password", not wrong_role,
          "; ".join(wrong_role))
    check("compose: the services start after the migration",
          all(services[s].get("depends_on", {}).get("migrate", {}).get("condition") == "service_completed_successfully"
              for s in ("actions", "rasa")) and services["migrate"]["command"] == MIGRATION_COMMAND)


def _requires_password(args: list[str], reference: str) -> bool:
    return "--requirepass" in args and args.index("--requirepass") + 1 < len(args) \
        and args[args.index("--requirepass") + 1].startswith(reference)


def check_backup(objects: dict) -> None:
    """The nightly off-site backup (k8s/backup-cronjob.yaml, k8s/backup/backup.sh)."""
    sys.path.insert(0, str(ROOT))
    from backend import privileges

    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    job = objects.get(("CronJob", "backup"))
    check("k8s: the backup CronJob exists, is applied, runs nightly and never twice at once",
          job is not None and "backup-cronjob.yaml" in kustomization["resources"]
          and job["spec"].get("concurrencyPolicy") == "Forbid" and len(job["spec"]["schedule"].split()) == 5)
    if job is None:
        return
    spec = _pod_spec(objects, "CronJob", "backup")
    dump = next((c for c in spec.get("initContainers", []) if c["name"] == "dump"), {})
    upload = next((c for c in spec.get("containers", []) if c["name"] == "upload"), {})
    values, secrets = k8s_env(objects, dump)
    user = _url_user(_expand(values.get("DATABASE_URL") or "", values))
    check(f"k8s backup: pg_dump connects as {privileges.BACKUP}, which only reads",
          user == privileges.BACKUP and secrets.get("DB_PASSWORD", {}).get("key") == "DB_BACKUP_PASSWORD"
          and privileges.BACKUP in privileges.READ_ALL and privileges.GRANTS.get(privileges.BACKUP) == {}
          and f"ALTER ROLE {privileges.BACKUP} SET default_transaction_read_only = on"
          in (K8S / "postgres" / "roles.psql").read_text(), f"{user} with {secrets.get('DB_PASSWORD')}")
    server = k8s_container(objects, "StatefulSet", "postgres")["image"] if ("StatefulSet", "postgres") in objects else None
    check("k8s backup: pg_dump is the server's major version (the same postgres image)",
          dump.get("image") == server or server is None, f"{dump.get('image')} vs {server}")
    _, upload_secrets = k8s_env(objects, upload)
    sealed = upload_secrets.get("RCLONE_CONFIG_SEALED_PASSWORD", {})
    check("k8s backup: uploaded encrypted (rclone crypt) with a password from the Secret, not optional",
          {e.get("name"): e.get("value") for e in upload.get("env", [])}.get("RCLONE_CONFIG_SEALED_TYPE") == "crypt"
          and sealed.get("key") == "BACKUP_ENCRYPTION_PASSWORD" and not sealed.get("optional")
          and all(k in upload_secrets for k in ("RCLONE_CONFIG_OFFSITE_ACCESS_KEY_ID",
                                                "RCLONE_CONFIG_OFFSITE_SECRET_ACCESS_KEY")))
    script = (K8S / "backup" / "backup.sh").read_text()
    generated = {f for g in kustomization.get("configMapGenerator", []) if g["name"] == "backup-scripts"
                 for f in g["files"]}
    check("k8s backup: dump then upload, 30 daily and 12 monthly kept, the script mounted from kustomize",
          dump.get("command") == ["sh", "/scripts/backup.sh", "dump"]
          and upload.get("command") == ["sh", "/scripts/backup.sh", "upload"]
          and "KEEP_DAILY=${BACKUP_KEEP_DAILY:-30}" in script and "KEEP_MONTHLY=${BACKUP_KEEP_MONTHLY:-12}" in script
          and "backup/backup.sh" in generated)
    check("k8s backup: conversation events left out of the dump (kept RETENTION_DAYS only)",
          "--exclude-table-data=events" in script)
    policy = objects[("NetworkPolicy", "postgres")]["spec"]["ingress"][0]["from"]
    check("k8s backup: the NetworkPolicy lets the backup reach PostgreSQL",
          any(f.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "backup" for f in policy))


def check_image(copies: list[str]) -> None:
    copied = {c.rstrip("/") for c in copies}
    needed = {"requirements.txt", "requirements.lock", "endpoints.yml", "credentials.yml", "logging.yml",
              "config.yml", "domain.yml", "data", "actions", "backend", "tools"}
    # Top-level packages named by class paths in Rasa's configuration files.
    for name in ("endpoints.yml", "credentials.yml", "config.yml", "logging.yml"):
        text = (ROOT / name).read_text()
        for module in re.findall(r"\b([a-z_]+)\.[a-z_]+\.[A-Z]\w+", text):
            if module not in ("rasa", "ext"):
                needed.add(module)
    missing = sorted(needed - copied)
    check("Dockerfile copies what the commands and configuration import", not missing, ", ".join(missing))
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    check("Dockerfile.dockerignore lets every COPY source through", copied <= allowed, str(copied - allowed))
    check("Dockerfile.dockerignore keeps var/ and .venv out (everything not allowed is excluded)",
          "*" in ignore and not ({"var", ".venv"} & allowed))


def check_routes(used: dict[str, set[str]]) -> None:
    """Build both Sanic apps as the containers would and compare their routes with the paths used."""
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):  # the import-time deprecation warnings
        from rasa.core import run

        channels = run.create_http_input_channels(None, "credentials.yml")
        rasa_app = run.configure_app(channels, enable_api=False, port=5005)
        from actions.server import build_app

        actions_app = build_app()
    for name, app in (("rasa", rasa_app), ("actions", actions_app)):
        routes = {"/" + r.path.strip("/") if r.path.strip("/") else "/" for r in app.router.routes}
        for path in sorted(used[name]):
            if path.endswith("/"):  # a prefix: some route must live under it
                ok = any(r.startswith(path) for r in routes)
            else:
                ok = path in routes
            check(f"{name} app has a route for {path}", ok, f"routes: {sorted(routes)}")
    rasa_routes = {"/" + r.path.strip("/") for r in rasa_app.router.routes}
    check("rasa app: no HTTP API routes (no /conversations/...)",
          not any(r.startswith("/conversations") or r.startswith("/model") for r in rasa_routes), str(rasa_routes))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="skip building the Sanic apps (route checks)")
    args = parser.parse_args()
    check_yaml()
    objects = k8s_objects()
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    image_env, copies, cmd = dockerfile()
    check_env(objects, compose, image_env)
    used = check_topology(objects, compose, cmd)
    check_database_roles(objects, compose)
    check_backup(objects)
    check_image(copies)
    if not args.fast:
        check_routes(used)
    print(f"{len(passed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
