"""Offline checks of deploy/: what can be proven here without Docker or a cluster.

    .venv/bin/python deploy/check.py            # everything (builds both Sanic apps: ~20 s)
    .venv/bin/python deploy/check.py --fast     # without building the apps (no route checks)
    .venv/bin/python deploy/check.py --release deploy/overlays/production   # before a release

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
  version of pg_dump, and uploads encrypted off-site, keeping 30 daily and 12 monthly;
- releases: the image ships the tested model (MODEL_SHA256), the migration is one Job and the
  pods wait for the schema, every ConfigMap a pod reads has a hashed name (a change rolls the
  pods), images carry a tag (placeholders allowed) or, with --release, a real digest;
- the base and each overlay (rendered by `kubectl kustomize`; skipped with one line without
  kubectl): the connection budget at the autoscalers' maxima within max_connections, the volume
  and PostgreSQL's resources against the capacity plan (PLAN, docs/performance.md), the OTP cap
  against the plan's peak, TLS to PostgreSQL with verify-full and the CA from a Secret.

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
DB_ROLES = {("Job", "migrate", "migrate"): ("vaksin_owner", "DB_OWNER_PASSWORD"),
            ("Deployment", "actions", "wait-for-schema"): ("vaksin_actions", "DB_ACTIONS_PASSWORD"),
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
    """The base's objects as kustomize would make them, without kubectl: the manifests listed in
    kustomization.yaml and the generated ConfigMaps (marked GENERATED: their names get a hash)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    objects = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc:
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    for generator in kustomization.get("configMapGenerator", []):
        data = {}
        for env_file in generator.get("envs", []):
            data.update(read_env_file(K8S / env_file))
        for file in generator.get("files", []):
            data[Path(file).name] = (K8S / file).read_text()
        objects[("ConfigMap", generator["name"])] = {
            "apiVersion": "v1", "kind": "ConfigMap", "data": data,
            "metadata": {"name": generator["name"], "annotations": {GENERATED: "true"}}}
    return objects


def read_env_file(path: Path) -> dict[str, str]:
    """kustomize's env file: KEY=value lines, # comments and blank lines skipped, no unquoting."""
    data = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            data[key.strip()] = value
    return data


def code_env_reads() -> dict[str, set[str]]:
    """Variable -> files that read it, over the runtime code and Rasa's configuration."""
    found: dict[str, set[str]] = {}
    files = [p for d in RUNTIME_CODE for p in (ROOT / d).rglob("*.py")]
    files += [ROOT / "tools" / "stack.py"]  # backend.retention takes database_url() from it
    for path in files:
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

    config = _config(objects)
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
    config = _config(objects)
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
        if keys & PRIVILEGED_KEYS and not (key[0] == "Job" and key in DB_ROLES and DB_ROLES[key][0] == privileges.OWNER
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
    check("k8s: only the postgres server and the migration (the Job migrate) hold the superuser's "
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


# --- releases, capacity, connections, TLS ------------------------------------------------------

GENERATED = "deploy-check/generated"  # marks a ConfigMap kustomize generates (hashed name)
OVERLAYS = DEPLOY / "overlays"
DIGEST = re.compile(r"@sha256:([0-9a-f]{64})$")
PLACEHOLDER_DIGEST = "0" * 64
CA_DIR = "/etc/postgres-ca"

# The capacity plan of docs/performance.md ("Capacity plan"), inputs then the measured figures;
# plan() derives the rest, and the doc's table shows the same arithmetic.
PLAN = {
    "emails_per_week": 134_000, "calls_per_week": 80_000,   # before the assistant
    "population": 281_600_000,          # Indonesia, mid-2024 (BPS projection)
    "whatsapp_share": 0.60,             # assumed: people who use WhatsApp
    "adoption_per_month": 0.02,         # assumed: of them, who talk to the assistant in a month
    "surge": 2.0,                       # assumed: a design day against an ordinary one
    "messages_per_conversation": 10,    # the bench's flows (tools/bench.py)
    "peak_hour_share": 0.12,            # assumed: the busiest hour's share of a day
    "burst": 1.5,                       # assumed: the busiest minutes against that hour
    "otp_share": 0.6,                   # assumed: conversations that ask for a code
    "events_per_message": 10.8,         # measured: 108 events for the bench's 10 turns
    "bytes_per_event": 600,             # measured 488 table + 39 time index; 73 other indexes
    "other_tables_gb": 10,              # citizens, certificates, tickets, audit log
    "free_share": 0.2,                  # room for vacuum and WAL
    "rasa_cpu_ms": 12,                  # measured 9.6 (alternating processes) + 2 WhatsApp, assumed
    "actions_cpu_ms": 4, "postgres_cpu_ms": 2,
    "postgres_cpu": 4, "postgres_memory_gib": 16,   # what docs/performance.md asks for
}


def plan(p: dict = PLAN) -> dict:
    contacts_per_day = (p["emails_per_week"] + p["calls_per_week"]) / 7
    ordinary_day = p["population"] * p["whatsapp_share"] * p["adoption_per_month"] / 30
    design_day = ordinary_day * p["surge"]
    messages_per_day = design_day * p["messages_per_conversation"]
    peak = messages_per_day * p["peak_hour_share"] / 3600
    gb_per_day = messages_per_day * p["events_per_message"] * p["bytes_per_event"] / 1e9
    otp_per_minute = design_day * p["peak_hour_share"] * p["otp_share"] / 60
    return {"contacts_per_day": contacts_per_day, "ordinary_conversations_per_day": ordinary_day,
            "conversations_per_day": design_day, "messages_per_day": messages_per_day,
            "peak_messages_per_second": peak, "burst_messages_per_second": peak * p["burst"],
            "gb_per_day": gb_per_day, "otp_per_minute_burst": otp_per_minute * p["burst"]}


def storage_needed_gb(retention_days: int, p: dict = PLAN) -> float:
    """Conversations for the retention period and a day of deleted rows not yet vacuumed, the
    other tables, and the free share."""
    return ((retention_days + 1) * plan(p)["gb_per_day"] + p["other_tables_gb"]) / (1 - p["free_share"])


def _quantity(value) -> float:
    """A Kubernetes quantity in its base unit (bytes, cores)."""
    text = str(value)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def _config(objects: dict) -> dict:
    """vaksin-config's data, by its name or its hashed name (rendered by kustomize)."""
    return next(o["data"] for (k, n), o in objects.items() if k == "ConfigMap" and re.fullmatch(r"vaksin-config(-\w{10})?", n))


def _postgres_args(objects: dict) -> dict[str, str]:
    args = k8s_container(objects, "StatefulSet", "postgres").get("args", [])
    return dict(a.split("=", 1) for a in args if "=" in a)


def _max_pods(objects: dict, name: str) -> int:
    """Pods of a Deployment at its autoscaler's maximum, with the rollout's surge on top."""
    deployment = objects[("Deployment", name)]["spec"]
    hpa = objects.get(("HorizontalPodAutoscaler", name))
    most = hpa["spec"]["maxReplicas"] if hpa else deployment["replicas"]
    surge = str(deployment.get("strategy", {}).get("rollingUpdate", {}).get("maxSurge", "25%"))
    return most + (-(-most * int(surge[:-1]) // 100) if surge.endswith("%") else int(surge))


def connection_budget(objects: dict) -> tuple[dict[str, int], int]:
    """Every pool that may be open at once, at the autoscalers' maxima: ({part: connections},
    PostgreSQL's max_connections)."""
    config = _config(objects)
    tracker_store = (ROOT / "rasa_server" / "tracker_store.py").read_text()
    rest_pool = int(re.search(r"Database\([^)]*max_connections=(\d+)", (ROOT / "rest" / "channel.py").read_text()).group(1))
    statements = int(config["SQL_POOL_SIZE"]) + int(config["SQL_MAX_OVERFLOW"])
    orm = 1 if "kwargs.update(pool_size=1, max_overflow=0)" in tracker_store else statements
    per_worker = statements + orm + int(config["WHATSAPP_DB_POOL_MAX"]) + rest_pool
    args = _postgres_args(objects)
    parts = {
        f"rasa {_max_pods(objects, 'rasa')} pods x {config['SANIC_WORKERS']} workers x {per_worker} "
        f"(tracker store {statements} + its ORM {orm} + WhatsApp {config['WHATSAPP_DB_POOL_MAX']} + REST {rest_pool})":
            _max_pods(objects, "rasa") * int(config["SANIC_WORKERS"]) * per_worker,
        f"actions {_max_pods(objects, 'actions')} pods x DB_POOL_MAX {config['DB_POOL_MAX']}":
            _max_pods(objects, "actions") * int(config["DB_POOL_MAX"]),
    }
    for kind, name in (("CronJob", "retention"), ("CronJob", "backup"), ("Job", "migrate")):
        if (kind, name) in objects:
            parts[f"{name} job"] = 1  # one connection, never two runs at once (Forbid, one Job)
    parts["superuser_reserved_connections"] = int(args.get("superuser_reserved_connections", 3))
    parts["reserved_connections"] = int(args.get("reserved_connections", 0))
    return parts, int(args.get("max_connections", 100))


def volume_problems(objects: dict, p: dict = PLAN) -> list[str]:
    """PostgreSQL's volume against the plan's storage for RETENTION_DAYS; its resources against
    what docs/performance.md asks for."""
    if ("StatefulSet", "postgres") not in objects:
        return []  # a managed PostgreSQL: size it by the same plan
    days = int(_config(objects)["RETENTION_DAYS"])
    claim = objects[("StatefulSet", "postgres")]["spec"]["volumeClaimTemplates"][0]
    size_gb = _quantity(claim["spec"]["resources"]["requests"]["storage"]) / 1e9
    problems = []
    if size_gb < storage_needed_gb(days, p):
        problems.append(f"volume {size_gb:.0f} GB < {storage_needed_gb(days, p):.0f} GB the plan needs for "
                        f"RETENTION_DAYS={days}")
    requests = k8s_container(objects, "StatefulSet", "postgres")["resources"]["requests"]
    if _quantity(requests["cpu"]) < p["postgres_cpu"] or _quantity(requests["memory"]) < p["postgres_memory_gib"] * 2**30:
        problems.append(f"postgres requests {requests} < {p['postgres_cpu']} CPU, {p['postgres_memory_gib']}Gi")
    return problems


def unhashed_config_refs(objects: dict, rendered: bool = False) -> list[str]:
    """ConfigMaps read by a workload whose name carries no hash of their content: a change
    there would not roll the pods. Statically: generated by kustomize; rendered: a hashed name."""
    hashed = {n for (k, n), o in objects.items() if k == "ConfigMap"
              and (o["metadata"].get("annotations", {}).get(GENERATED) == "true" if not rendered
                   else re.search(r"-[a-z0-9]{10}$", n))}
    problems = []
    for (kind, workload, cname), container, _ in _workload_containers(objects):
        refs = [s["configMapRef"]["name"] for s in container.get("envFrom", []) if "configMapRef" in s]
        refs += [e["valueFrom"]["configMapKeyRef"]["name"] for e in container.get("env", [])
                 if "configMapKeyRef" in e.get("valueFrom", {})]
        problems += [f"{kind}/{workload}/{cname} reads {r}" for r in refs if r not in hashed]
    for (kind, workload) in list(objects):
        if kind in ("Deployment", "StatefulSet", "CronJob", "Job", "DaemonSet"):
            for volume in _pod_spec(objects, kind, workload).get("volumes", []):
                name = volume.get("configMap", {}).get("name")
                if name and name not in hashed:
                    problems.append(f"{kind}/{workload} mounts {name}")
    return problems


def image_problems(objects: dict, release: bool) -> list[str]:
    """Images that may change under the same name. Release: every image by a real digest.
    Otherwise: a tag or a digest, the documented placeholders included, never none or latest."""
    problems = []
    for (kind, workload, cname), container, _ in _workload_containers(objects):
        image = container["image"]
        digest = DIGEST.search(image)
        if release and (not digest or digest.group(1) == PLACEHOLDER_DIGEST):
            problems.append(f"{kind}/{workload}/{cname}: {image}" + (" (placeholder digest)" if digest else " (no digest)"))
        if not release and not digest and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
            problems.append(f"{kind}/{workload}/{cname}: {image} (no tag)")
    return problems


def tls_problems(objects: dict) -> list[str]:
    """verify-full with the CA of the Secret postgres-tls in every container that connects."""
    config = _config(objects)
    problems = []
    if config.get("PGSSLMODE") != "verify-full":
        problems.append(f"PGSSLMODE={config.get('PGSSLMODE')}, not verify-full")
    if config.get("PGSSLROOTCERT") != f"{CA_DIR}/ca.crt":
        problems.append(f"PGSSLROOTCERT={config.get('PGSSLROOTCERT')}, not {CA_DIR}/ca.crt")
    for (kind, workload, cname), container, _ in _workload_containers(objects):
        values, _ = k8s_env(objects, container)
        if "DATABASE_URL" not in values and "TRACKER_DB_USER" not in values:
            continue
        for item in container.get("env", []):  # single keys taken from the ConfigMap
            ref = item.get("valueFrom", {}).get("configMapKeyRef")
            if ref:
                values[item["name"]] = objects[("ConfigMap", ref["name"])]["data"].get(ref["key"])
        if values.get("PGSSLMODE") != "verify-full" or values.get("PGSSLROOTCERT") != f"{CA_DIR}/ca.crt":
            problems.append(f"{kind}/{workload}/{cname}: PGSSLMODE/PGSSLROOTCERT not set")
        mount = next((m for m in container.get("volumeMounts", []) if m["mountPath"] == CA_DIR), None)
        volume = next((v for v in _pod_spec(objects, kind, workload).get("volumes", [])
                       if mount and v["name"] == mount["name"]), {})
        if volume.get("secret", {}).get("secretName") != "postgres-tls" \
                or [i["key"] for i in volume["secret"].get("items", [])] != ["ca.crt"]:
            problems.append(f"{kind}/{workload}/{cname}: the CA (postgres-tls, ca.crt only) not mounted at {CA_DIR}")
    if ("StatefulSet", "postgres") in objects and _postgres_args(objects).get("ssl") != "on":
        problems.append("postgres: ssl=on missing")
    return problems


def check_release_shape(objects: dict, label: str, rendered: bool = False) -> None:
    """The checks that hold for the base and for every overlay."""
    parts, max_connections = connection_budget(objects)
    total = sum(parts.values())
    check(f"{label}: connection budget {total} <= max_connections {max_connections}", total <= max_connections,
          "; ".join(f"{k}: {v}" for k, v in parts.items()))
    problems = volume_problems(objects)
    check(f"{label}: PostgreSQL's volume and resources meet the plan (RETENTION_DAYS="
          f"{_config(objects)['RETENTION_DAYS']})", not problems, "; ".join(problems))
    problems = unhashed_config_refs(objects, rendered)
    check(f"{label}: every ConfigMap a pod reads carries a hash of its content (a change rolls the pods)",
          not problems, "; ".join(problems))
    problems = tls_problems(objects)
    check(f"{label}: TLS to PostgreSQL verified (verify-full, the CA from the Secret postgres-tls)",
          not problems, "; ".join(problems))
    short = []
    for name, ms in (("rasa", PLAN["rasa_cpu_ms"]), ("actions", PLAN["actions_cpu_ms"])):
        hpa = objects[("HorizontalPodAutoscaler", name)]["spec"]
        request = _quantity(k8s_container(objects, "Deployment", name)["resources"]["requests"]["cpu"])
        at_target = hpa["maxReplicas"] * request * hpa["metrics"][0]["resource"]["target"]["averageUtilization"] / 100
        need = plan()["burst_messages_per_second"] * ms / 1000
        if at_target < need:
            short.append(f"{name}: {at_target:.2f} cores at the HPA's maximum and target < {need:.2f}")
    check(f"{label}: the autoscalers' maxima carry the plan's bursts at their CPU targets", not short, "; ".join(short))
    otp_cap = int(_config(objects)["OTP_MAX_SENDS_PER_MINUTE"])
    needed = plan()["otp_per_minute_burst"]
    check(f"{label}: OTP_MAX_SENDS_PER_MINUTE {otp_cap} >= the plan's {needed:.0f} codes a minute",
          otp_cap >= needed)


def check_releases(objects: dict, image_text: str) -> None:
    """The base: the model shipped is the model tested, migrations run once in a Job."""
    check("Dockerfile: no training; the tested model copied and checked against MODEL_SHA256",
          "rasa train" not in image_text and "COPY models/current.tar.gz models/current.tar.gz" in image_text
          and re.search(r"ARG MODEL_SHA256\b", image_text) is not None
          and '"$MODEL_SHA256  models/current.tar.gz" | sha256sum -c -' in image_text)
    job = objects.get(("Job", "migrate"))
    check("k8s: the migration runs once, as the Job migrate",
          job is not None and k8s_container(objects, "Job", "migrate")["command"] == MIGRATION_COMMAND
          and job["spec"]["template"]["spec"]["restartPolicy"] == "Never")
    waiting = []
    for name in ("rasa", "actions"):
        spec = _pod_spec(objects, "Deployment", name)
        inits = [c.get("command", [])[:4] for c in spec.get("initContainers", [])]
        if ["python", "-m", "backend.migrate", "--wait"] not in inits:
            waiting.append(name)
        if any(c.get("command") == MIGRATION_COMMAND for c in spec.get("containers", []) + spec.get("initContainers", [])):
            waiting.append(f"{name} migrates itself")
    check("k8s: the pods of rasa and actions wait for the schema (wait-for-schema), none migrates",
          not waiting, ", ".join(waiting))
    import copy

    pinned = copy.deepcopy(objects)
    for entry in yaml.safe_load((K8S / "kustomization.yaml").read_text()).get("images", []):
        image = entry.get("newName", entry["name"]) + (f":{entry['newTag']}" if "newTag" in entry else "") \
            + (f"@{entry['digest']}" if "digest" in entry else "")
        for _, container, _ in _workload_containers(pinned):
            if container["image"] == entry["name"]:
                container["image"] = image
    problems = image_problems(pinned, release=False)
    check("k8s base: every image has a tag or a digest (placeholders allowed here)", not problems, "; ".join(problems))
    pg_db = {e["name"]: e.get("value") for e in k8s_container(objects, "StatefulSet", "postgres")["env"]}.get("POSTGRES_DB")
    check("k8s postgres: POSTGRES_DB is TRACKER_DB_NAME", pg_db == _config(objects)["TRACKER_DB_NAME"])


def kustomize(target: Path) -> dict:
    """Render a kustomization with kubectl."""
    import subprocess

    done = subprocess.run(["kubectl", "kustomize", str(target)], capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "kubectl kustomize failed")
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(done.stdout) if d}


def check_overlays(release: Path | None) -> None:
    targets = [K8S] + sorted(p for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").exists())
    if release is not None and release.resolve() not in [t.resolve() for t in targets]:
        targets.append(release)
    check("overlays: staging and production exist",
          {p.name for p in targets} >= {"staging", "production"}, str([p.name for p in targets]))
    import shutil

    if shutil.which("kubectl") is None:
        print("skip rendering the base and the overlays (kustomize): kubectl not found")
        if release is not None:
            check(f"--release {release}: rendered to check its images", False, "kubectl not found")
        return
    for target in targets:
        label = f"kustomize {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}"
        try:
            objects = kustomize(target)
        except RuntimeError as error:
            check(f"{label} renders", False, str(error))
            continue
        check(f"{label} renders", True)
        check_release_shape(objects, label, rendered=True)
        if release is not None and target.resolve() == release.resolve():
            problems = image_problems(objects, release=True)
            check(f"{label}: --release: every image pinned by a real digest", not problems, "; ".join(problems))


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
    parser.add_argument("--release", type=Path, metavar="OVERLAY",
                        help="also refuse placeholder digests and tags in this overlay (e.g. deploy/overlays/production)")
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
    check_releases(objects, (DEPLOY / "Dockerfile").read_text())
    check_release_shape(objects, "k8s base")
    check_overlays(args.release)
    if not args.fast:
        check_routes(used)
    print(f"{len(passed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
