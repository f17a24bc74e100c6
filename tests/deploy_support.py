"""What the tests of deploy/ (tests/test_deploy*.py) share: the manifests read as kustomize would
assemble them (without kubectl), the compose file and the Dockerfile, the variables the code
reads, and the checks that hold for the base and every overlay (connection budget, volume, TLS,
hashed ConfigMaps, autoscalers, OTP cap) as functions that name what is wrong.

A new setting the code reads must be set in deploy/ (k8s/config.env and docker-compose.yml) or
listed in LEFT_TO_DEFAULT below with the reason; tests/test_deploy.py finds the code's reads."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tools.release_check import image_problems, pod_spec, render, workload_containers  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = DEPLOY / "overlays"

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
    "DB_SESSION_SETTINGS": "startup: timeouts as startup options; role only with PgBouncer (deploy/README.md)",
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
                "CERTIFICATE_SIGNING_KEY", "CERTIFICATE_PUBLIC_KEYS", "PUBLIC_BASE_URL", "OTP_SENDER", "DB_POOL_MAX",
                "DB_STATEMENT_TIMEOUT_MS", "SMS_GATEWAY_URL", "SMS_GATEWAY_TOKEN", "WHATSAPP_ACCESS_TOKEN",
                "WHATSAPP_PHONE_NUMBER_ID", "WHATSAPP_OTP_TEMPLATE", "OTP_TTL_SECONDS", "OTP_MAX_ATTEMPTS",
                "OTP_RESEND_SECONDS", "OTP_MAX_SENDS_PER_HOUR", "OTP_MAX_SENDS_PER_MINUTE", "SESSION_TTL_SECONDS",
                "CERTIFICATE_LINK_TTL_SECONDS", "LOG_LEVEL"},
    "retention": {"DATABASE_URL", "RETENTION_DAYS"},
}
# The workload of each process in Kubernetes.
PROCESSES = {"rasa": ("Deployment", "rasa"), "actions": ("Deployment", "actions"), "retention": ("CronJob", "retention")}
# Must come from the Secret (k8s), never from the ConfigMap, and must not be optional.
REQUIRED_SECRETS = {"rasa": {"TRACKER_DB_PASSWORD", "ACTION_SERVER_TOKEN", "REDIS_PASSWORD"},
                    "actions": {"DB_PASSWORD", "ACTION_SERVER_TOKEN", "OTP_HASH_KEY", "CERTIFICATE_SIGNING_KEY"},
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
GENERATED = "deploy-check/generated"  # marks a ConfigMap kustomize generates (hashed name)
CA_DIR = "/etc/postgres-ca"


# --- reading ----------------------------------------------------------------------------------

def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))


def k8s_objects() -> dict[tuple[str, str], dict]:
    """The base's objects as kustomize would make them, without kubectl: the manifests listed in
    kustomization.yaml and the generated ConfigMaps (marked GENERATED: their names get a hash).
    A fresh copy on each call: tests spoil it."""
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


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


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


def needs(process: str) -> set[str]:
    """What a process needs set: NEEDS, and for Rasa endpoints.yml's variables."""
    return NEEDS[process] | (endpoints_vars() if process == "rasa" else set())


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
    return pod_spec(objects, kind, name)["containers"][0]


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


def config(objects: dict) -> dict:
    """vaksin-config's data, by its name or its hashed name (rendered by kustomize)."""
    return next(o["data"] for (k, n), o in objects.items() if k == "ConfigMap" and re.fullmatch(r"vaksin-config(-\w{10})?", n))


def all_containers(objects: dict) -> list[dict]:
    out = []
    for (kind, name) in objects:
        if kind in ("Deployment", "StatefulSet", "CronJob"):
            out += pod_spec(objects, kind, name)["containers"]
    return out


def port_of(container: dict, name_or_number) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == name_or_number)


def service_port(objects: dict, service: str, port) -> tuple[dict, dict]:
    svc = objects[("Service", service)]["spec"]
    for p in svc["ports"]:
        if p["port"] == port or p.get("name") == port:
            return svc, p
    raise KeyError(f"{service}:{port}")


def url_user(url: str) -> str | None:
    # Not urlsplit: compose's ${VAR:?message} in the password may hold a "/".
    found = re.match(r"postgres(?:ql)?://([^:@/]+)[:@]", url)
    return found.group(1) if found else None


def expand(value: str, values: dict) -> str:
    return K8S_REF.sub(lambda m: values.get(m.group(1)) or m.group(0), value)


def requires_password(args: list[str], reference: str) -> bool:
    return "--requirepass" in args and args.index("--requirepass") + 1 < len(args) \
        and args[args.index("--requirepass") + 1].startswith(reference)


def nginx_locations(nginx: str, ports: dict[str, int]) -> dict[str, str]:
    """The compose edge's exact and prefix locations -> the service they proxy to (or
    "host:port?" when the port is not that service's)."""
    locations = {}
    for block in re.split(r"\blocation\s+", nginx)[1:]:
        found = re.match(r"(?:=|\^~)\s+(\S+)\s*\{", block)
        upstream = re.search(r"set\s+\$\w+\s+http://([\w-]+):(\d+);\s*proxy_pass\s+\$\w+;", block)
        if found and upstream:
            host, port = upstream.group(1), int(upstream.group(2))
            locations[found.group(1)] = host if ports.get(host) == port else f"{host}:{port}?"
    return locations


def used_paths(objects: dict) -> dict[str, set[str]]:
    """The paths each app must serve: its probes, Rasa's ACTION_ENDPOINT_URL, the public ones."""
    paths: dict[str, set[str]] = {"rasa": set(), "actions": set()}
    for app in paths:
        container = k8s_container(objects, "Deployment", app)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = container.get(probe, {}).get("httpGet")
            if get:
                paths[app].add(get["path"])
    paths["actions"].add("/webhook")
    for path, app in PUBLIC_PATHS.items():
        paths[app].add(path)
    return paths


# --- database roles ---------------------------------------------------------------------------

def database_role_problems(objects: dict, compose_file: dict) -> dict[str, list[str]]:
    """No workload connects as the superuser or the owner but the migration; each service as its
    own role, with that role's password. Check -> what is wrong (empty when it holds)."""
    from backend import privileges

    problems: dict[str, list[str]] = {}
    roles = {privileges.OWNER, *privileges.GRANTS}
    created = set(re.findall(r"'(vaksin_\w+)'", (K8S / "postgres" / "roles.psql").read_text()))
    problems["roles-psql-creates-every-role"] = sorted(roles - created)
    assigned = {r for r, _ in DB_ROLES.values()}
    problems["a-role-per-service"] = [] if (
        len(assigned - {privileges.OWNER}) == len(privileges.GRANTS) and assigned == roles) \
        else [f"DB_ROLES names {sorted(assigned)}, backend/privileges.py {sorted(roles)}"]
    misused, wrong_role = [], []
    for key, container, _ in workload_containers(objects):
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
            urls = [expand(values.get(n) or "", values) for n in ("DATABASE_URL",)]
            users = {url_user(u) for u in urls if u} | (
                {values["TRACKER_DB_USER"]} if "TRACKER_DB_USER" in values and key[1] == "rasa" else set())
            password_keys = {ref["key"] for name, ref in secrets.items() if "PASSWORD" in ref["key"]
                             and ref["key"].startswith(("DB_", "POSTGRES"))}
            if users != {role} or password_keys != {secret_key}:
                wrong_role.append(f"{label}: {sorted(users)} with {sorted(password_keys)}")
        elif "DATABASE_URL" in values or "TRACKER_DB_USER" in values:
            wrong_role.append(f"{label}: connects to the database but has no role in DB_ROLES")
    problems["k8s-privileged-passwords"] = misused
    problems["k8s-own-roles"] = wrong_role
    present = {k for k, _, _ in workload_containers(objects)}
    problems["k8s-containers-exist"] = [str(key) for key in DB_ROLES if key not in present]

    services = compose_file["services"]
    misused, wrong_role = [], []
    for name, service in services.items():
        text = yaml.safe_dump(service)
        privileged = [k for k in PRIVILEGED_KEYS if "${" + k in text]
        if privileged and name not in ("postgres", "migrate"):
            misused.append(f"{name} ({', '.join(privileged)})")
        env = service.get("environment") or {}
        if name in COMPOSE_DB_ROLES:
            role = COMPOSE_DB_ROLES[name]
            users = {url_user(str(env.get("DATABASE_URL", "")))} | (
                {env["TRACKER_DB_USER"]} if "TRACKER_DB_USER" in env else set())
            passwords = set(re.findall(r"\$\{(DB_\w+_PASSWORD|POSTGRES_PASSWORD)", text))
            if users != {role} or passwords != {f"DB_{role.split('_', 1)[1].upper()}_PASSWORD"}:
                wrong_role.append(f"{name}: {sorted(map(str, users))} with {sorted(passwords)}")
        elif "DATABASE_URL" in env or "TRACKER_DB_USER" in env:
            wrong_role.append(f"{name}: connects to the database without a role of its own")
    problems["compose-privileged-passwords"] = misused
    problems["compose-own-roles"] = wrong_role
    problems["compose-start-after-the-migration"] = [
        s for s in ("actions", "rasa")
        if services[s].get("depends_on", {}).get("migrate", {}).get("condition") != "service_completed_successfully"]
    if services["migrate"]["command"] != MIGRATION_COMMAND:
        problems["compose-start-after-the-migration"].append(f"migrate runs {services['migrate']['command']}")
    return problems


# --- the nightly backup (k8s/backup-cronjob.yaml, k8s/backup/backup.sh) ----------------------------

def backup_problems(objects: dict) -> dict[str, list[str]]:
    """The off-site backup's checks -> what is wrong (empty when it holds). Without the CronJob
    every check of it fails with that one reason."""
    from backend import privileges

    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    script = (K8S / "backup" / "backup.sh").read_text()
    sources = objects[("NetworkPolicy", "postgres")]["spec"]["ingress"][0]["from"]
    reaches = [] if any(f.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "backup"
                        for f in sources) else ["the NetworkPolicy postgres lets no backup pod in"]
    events = [] if "--exclude-table-data=events" in script else ["backup.sh dumps the conversation events"]
    job = objects.get(("CronJob", "backup"))
    if job is None:
        missing = ["no CronJob backup"]
        return {"applied-nightly-never-twice": missing, "dumps-as-the-read-only-role": missing,
                "pg-dump-of-the-servers-version": missing, "uploaded-encrypted": missing,
                "dump-upload-keep-30-daily-12-monthly": missing, "events-left-out": events,
                "network-policy-lets-it-reach-postgres": reaches}
    problems: dict[str, list[str]] = {}
    problems["applied-nightly-never-twice"] = [
        p for p, bad in (("backup-cronjob.yaml not in kustomization.yaml", "backup-cronjob.yaml" not in kustomization["resources"]),
                         ("concurrencyPolicy is not Forbid", job["spec"].get("concurrencyPolicy") != "Forbid"),
                         ("schedule is not a cron line", len(job["spec"]["schedule"].split()) != 5)) if bad]
    spec = pod_spec(objects, "CronJob", "backup")
    dump = next((c for c in spec.get("initContainers", []) if c["name"] == "dump"), {})
    upload = next((c for c in spec.get("containers", []) if c["name"] == "upload"), {})
    values, secrets = k8s_env(objects, dump)
    user = url_user(expand(values.get("DATABASE_URL") or "", values))
    read_only = f"ALTER ROLE {privileges.BACKUP} SET default_transaction_read_only = on"
    problems["dumps-as-the-read-only-role"] = [] if (
        user == privileges.BACKUP and secrets.get("DB_PASSWORD", {}).get("key") == "DB_BACKUP_PASSWORD"
        and privileges.BACKUP in privileges.READ_ALL and privileges.GRANTS.get(privileges.BACKUP) == {}
        and read_only in (K8S / "postgres" / "roles.psql").read_text()) \
        else [f"pg_dump connects as {user} with {secrets.get('DB_PASSWORD')}"]
    server = k8s_container(objects, "StatefulSet", "postgres")["image"] if ("StatefulSet", "postgres") in objects else None
    problems["pg-dump-of-the-servers-version"] = [] if dump.get("image") == server or server is None \
        else [f"{dump.get('image')} vs the server's {server}"]
    _, upload_secrets = k8s_env(objects, upload)
    sealed = upload_secrets.get("RCLONE_CONFIG_SEALED_PASSWORD", {})
    problems["uploaded-encrypted"] = [] if (
        {e.get("name"): e.get("value") for e in upload.get("env", [])}.get("RCLONE_CONFIG_SEALED_TYPE") == "crypt"
        and sealed.get("key") == "BACKUP_ENCRYPTION_PASSWORD" and not sealed.get("optional")
        and all(k in upload_secrets for k in ("RCLONE_CONFIG_OFFSITE_ACCESS_KEY_ID",
                                              "RCLONE_CONFIG_OFFSITE_SECRET_ACCESS_KEY"))) \
        else ["not rclone crypt with BACKUP_ENCRYPTION_PASSWORD and the off-site keys from the Secret"]
    generated = {f for g in kustomization.get("configMapGenerator", []) if g["name"] == "backup-scripts"
                 for f in g["files"]}
    problems["dump-upload-keep-30-daily-12-monthly"] = [] if (
        dump.get("command") == ["sh", "/scripts/backup.sh", "dump"]
        and upload.get("command") == ["sh", "/scripts/backup.sh", "upload"]
        and "KEEP_DAILY=${BACKUP_KEEP_DAILY:-30}" in script and "KEEP_MONTHLY=${BACKUP_KEEP_MONTHLY:-12}" in script
        and "backup/backup.sh" in generated) \
        else [f"dump runs {dump.get('command')}, upload {upload.get('command')}; or the script keeps other counts"
              " or is not generated by kustomize"]
    problems["events-left-out"] = events
    problems["network-policy-lets-it-reach-postgres"] = reaches
    return problems


# --- releases, capacity, connections, TLS ------------------------------------------------------

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


def quantity(value) -> float:
    """A Kubernetes quantity in its base unit (bytes, cores)."""
    text = str(value)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def postgres_args(objects: dict) -> dict[str, str]:
    args = k8s_container(objects, "StatefulSet", "postgres").get("args", [])
    return dict(a.split("=", 1) for a in args if "=" in a)


def max_pods(objects: dict, name: str) -> int:
    """Pods of a Deployment at its autoscaler's maximum, with the rollout's surge on top."""
    deployment = objects[("Deployment", name)]["spec"]
    hpa = objects.get(("HorizontalPodAutoscaler", name))
    most = hpa["spec"]["maxReplicas"] if hpa else deployment["replicas"]
    surge = str(deployment.get("strategy", {}).get("rollingUpdate", {}).get("maxSurge", "25%"))
    return most + (-(-most * int(surge[:-1]) // 100) if surge.endswith("%") else int(surge))


def connection_budget(objects: dict) -> tuple[dict[str, int], int]:
    """Every pool that may be open at once, at the autoscalers' maxima: ({part: connections},
    PostgreSQL's max_connections)."""
    settings = config(objects)
    tracker_store = (ROOT / "rasa_server" / "tracker_store.py").read_text()
    rest_pool = int(re.search(r"Database\([^)]*max_connections=(\d+)", (ROOT / "rest" / "channel.py").read_text()).group(1))
    statements = int(settings["SQL_POOL_SIZE"]) + int(settings["SQL_MAX_OVERFLOW"])
    orm = 1 if "kwargs.update(pool_size=1, max_overflow=0)" in tracker_store else statements
    per_worker = statements + orm + int(settings["WHATSAPP_DB_POOL_MAX"]) + rest_pool
    args = postgres_args(objects)
    parts = {
        f"rasa {max_pods(objects, 'rasa')} pods x {settings['SANIC_WORKERS']} workers x {per_worker} "
        f"(tracker store {statements} + its ORM {orm} + WhatsApp {settings['WHATSAPP_DB_POOL_MAX']} + REST {rest_pool})":
            max_pods(objects, "rasa") * int(settings["SANIC_WORKERS"]) * per_worker,
        f"actions {max_pods(objects, 'actions')} pods x DB_POOL_MAX {settings['DB_POOL_MAX']}":
            max_pods(objects, "actions") * int(settings["DB_POOL_MAX"]),
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
    days = int(config(objects)["RETENTION_DAYS"])
    claim = objects[("StatefulSet", "postgres")]["spec"]["volumeClaimTemplates"][0]
    size_gb = quantity(claim["spec"]["resources"]["requests"]["storage"]) / 1e9
    problems = []
    if size_gb < storage_needed_gb(days, p):
        problems.append(f"volume {size_gb:.0f} GB < {storage_needed_gb(days, p):.0f} GB the plan needs for "
                        f"RETENTION_DAYS={days}")
    requests = k8s_container(objects, "StatefulSet", "postgres")["resources"]["requests"]
    if quantity(requests["cpu"]) < p["postgres_cpu"] or quantity(requests["memory"]) < p["postgres_memory_gib"] * 2**30:
        problems.append(f"postgres requests {requests} < {p['postgres_cpu']} CPU, {p['postgres_memory_gib']}Gi")
    return problems


def unhashed_config_refs(objects: dict, rendered: bool = False) -> list[str]:
    """ConfigMaps read by a workload whose name carries no hash of their content: a change
    there would not roll the pods. Statically: generated by kustomize; rendered: a hashed name."""
    hashed = {n for (k, n), o in objects.items() if k == "ConfigMap"
              and (o["metadata"].get("annotations", {}).get(GENERATED) == "true" if not rendered
                   else re.search(r"-[a-z0-9]{10}$", n))}
    problems = []
    for (kind, workload, cname), container, _ in workload_containers(objects):
        refs = [s["configMapRef"]["name"] for s in container.get("envFrom", []) if "configMapRef" in s]
        refs += [e["valueFrom"]["configMapKeyRef"]["name"] for e in container.get("env", [])
                 if "configMapKeyRef" in e.get("valueFrom", {})]
        problems += [f"{kind}/{workload}/{cname} reads {r}" for r in refs if r not in hashed]
    for (kind, workload) in list(objects):
        if kind in ("Deployment", "StatefulSet", "CronJob", "Job", "DaemonSet"):
            for volume in pod_spec(objects, kind, workload).get("volumes", []):
                name = volume.get("configMap", {}).get("name")
                if name and name not in hashed:
                    problems.append(f"{kind}/{workload} mounts {name}")
    return problems


def tls_problems(objects: dict) -> list[str]:
    """verify-full with the CA of the Secret postgres-tls in every container that connects."""
    settings = config(objects)
    problems = []
    if settings.get("PGSSLMODE") != "verify-full":
        problems.append(f"PGSSLMODE={settings.get('PGSSLMODE')}, not verify-full")
    if settings.get("PGSSLROOTCERT") != f"{CA_DIR}/ca.crt":
        problems.append(f"PGSSLROOTCERT={settings.get('PGSSLROOTCERT')}, not {CA_DIR}/ca.crt")
    for (kind, workload, cname), container, _ in workload_containers(objects):
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
        volume = next((v for v in pod_spec(objects, kind, workload).get("volumes", [])
                       if mount and v["name"] == mount["name"]), {})
        if volume.get("secret", {}).get("secretName") != "postgres-tls" \
                or [i["key"] for i in volume["secret"].get("items", [])] != ["ca.crt"]:
            problems.append(f"{kind}/{workload}/{cname}: the CA (postgres-tls, ca.crt only) not mounted at {CA_DIR}")
    if ("StatefulSet", "postgres") in objects and postgres_args(objects).get("ssl") != "on":
        problems.append("postgres: ssl=on missing")
    return problems


def autoscaler_problems(objects: dict) -> list[str]:
    """The CPU the autoscalers' maxima give at their targets against the plan's bursts."""
    short = []
    for name, ms in (("rasa", PLAN["rasa_cpu_ms"]), ("actions", PLAN["actions_cpu_ms"])):
        hpa = objects[("HorizontalPodAutoscaler", name)]["spec"]
        request = quantity(k8s_container(objects, "Deployment", name)["resources"]["requests"]["cpu"])
        at_target = hpa["maxReplicas"] * request * hpa["metrics"][0]["resource"]["target"]["averageUtilization"] / 100
        need = plan()["burst_messages_per_second"] * ms / 1000
        if at_target < need:
            short.append(f"{name}: {at_target:.2f} cores at the HPA's maximum and target < {need:.2f}")
    return short


def budget_problems(objects: dict) -> list[str]:
    parts, max_connections = connection_budget(objects)
    total = sum(parts.values())
    return [] if total <= max_connections else [
        f"{total} > max_connections {max_connections}: " + "; ".join(f"{k}: {v}" for k, v in parts.items())]


def otp_cap_problems(objects: dict) -> list[str]:
    otp_cap = int(config(objects)["OTP_MAX_SENDS_PER_MINUTE"])
    needed = plan()["otp_per_minute_burst"]
    return [] if otp_cap >= needed else [f"OTP_MAX_SENDS_PER_MINUTE {otp_cap} < the plan's {needed:.0f} codes a minute"]


# The checks that hold for the base and for every overlay (tests/test_deploy_release.py):
# name -> (objects, rendered by kubectl) -> what is wrong, empty when it holds.
RELEASE_SHAPE = {
    "connection-budget": lambda objects, rendered: budget_problems(objects),
    "volume-and-resources": lambda objects, rendered: volume_problems(objects),
    "hashed-configmaps": unhashed_config_refs,
    "tls-verified": lambda objects, rendered: tls_problems(objects),
    "autoscalers-carry-bursts": lambda objects, rendered: autoscaler_problems(objects),
    "otp-cap": lambda objects, rendered: otp_cap_problems(objects),
}


def release_shape_problems(objects: dict, rendered: bool = False) -> dict[str, list[str]]:
    """Every RELEASE_SHAPE check -> what is wrong (empty when it holds)."""
    return {name: check(objects, rendered) for name, check in RELEASE_SHAPE.items()}


def overlays() -> list[Path]:
    return sorted(p for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").exists())
