"""The benchmark over WhatsApp (`make bench-whatsapp`, `python -m tools.bench --channel whatsapp`).

    python -m tools.bench --channel whatsapp --users 16 --duration 45
    python -m tools.bench --channel whatsapp --wa-throughput 80    # Meta's default tier

Simulated citizens, each flow under its own wa_id (the bench account's number, which is also the
number it types and gets its code on), go through the REST bench's flows as signed webhook POSTs
in Meta's payload shape (simulator.fake_graph's builders) into the real stack (tools/stack.py:
PostgreSQL, action server, Rasa with the WhatsApp channel). Replies and the OTP template
(OTP_SENDER=whatsapp) go out through the Graph API to the local fake, configured with Meta's
limits (simulator.fake_graph.Limits: the number's throughput, the pair rate, a latency per send).

A turn is timed from the webhook POST to the arrival of its last reply at the fake (the
request reaching it, before the latency it answers after); a turn ends
when its replies stop for `--wa-quiet` seconds (a reply arriving later still counts to its turn,
as a late reply). That pause, longer than a send, is the citizens' think time: turns per second
here are not the REST bench's, which sends the next text as soon as the answer is back.
Written under "whatsapp" in results/bench.json, and shown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
import secrets
import socket
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import aiohttp

from simulator.fake_graph import ChatEntry, FakeGraph, Limits, text, webhook
from tools.stack import ROOT, Stack, database_url, log, prepare_database
from whatsapp.inbound import SIGNATURE_HEADER, sign

# Meta's pair rate (about 1 message every 6 s to one number, bursts allowed) and a send's latency.
PAIR_PER_S = 1 / 6
PAIR_BURST = 45
LATENCY_S = (0.1, 0.3)
# The tier docs/performance.md's plan needs (Meta's default is 80 messages a second).
THROUGHPUT_PER_S = 1000
QUIET_S = 0.5  # longer than the slowest send (LATENCY_S), so a turn's replies are not cut short
REPLY_TIMEOUT_S = 30.0
DRAIN_S = 20.0  # after the run: how long the turns still under way may take to finish
# The OTP cap of deploy/k8s/config.env: what the deployed service allows all citizens together.
DEPLOY_OTP_PER_MINUTE = "480"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def signed_delivery(message: dict, app_secret: str, name: str = "Warga Bench") -> tuple[bytes, dict[str, str]]:
    """One webhook POST as Meta makes it: the body and its headers, signed with the app secret."""
    body = json.dumps(webhook([message], names={message["from"]: name}), ensure_ascii=False).encode()
    return body, {"Content-Type": "application/json", SIGNATURE_HEADER: sign(app_secret, body)}


def bodies(payloads: list[dict]) -> str:
    """The text a citizen reads in these Graph API payloads."""
    parts = []
    for p in payloads:
        if p.get("type") == "text":
            parts.append(p["text"]["body"])
        elif p.get("type") == "interactive":
            parts.append(p["interactive"]["body"]["text"])
        elif p.get("type") == "document":
            parts.append(p["document"].get("caption", ""))
    return "\n".join(parts)


def otp_code(payloads: list[dict]) -> str | None:
    """The code of an authentication template among these payloads."""
    for p in payloads:
        if p.get("type") == "template":
            for component in p["template"].get("components", []):
                for parameter in component.get("parameters", []):
                    if re.fullmatch(r"\d{6}", str(parameter.get("text", ""))):
                        return parameter["text"]
    return None


@dataclass
class WaSample:
    turn_s: list[float] = field(default_factory=list)     # POST -> last reply of the turn at the fake
    first_s: list[float] = field(default_factory=list)    # POST -> first reply
    accepted_s: list[float] = field(default_factory=list)  # POST -> the fake's answer to the last reply
    webhook_s: list[float] = field(default_factory=list)  # the POST's own round trip
    webhook_refused: int = 0
    unanswered: int = 0
    late_replies: int = 0
    replies: int = 0
    errors: int = 0
    flows: int = 0
    elapsed: float = 0.0
    wamids: list[str] = field(default_factory=list)


def arrival(entry: ChatEntry) -> float:
    """When the channel's send reached the fake Graph API (before the fake's own latency)."""
    return entry.arrived if entry.arrived is not None else entry.at


class Replies:
    """What the fake sends each number, handed from the fake's thread to this event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queues: dict[str, asyncio.Queue] = {}

    def hear(self, entry: ChatEntry) -> None:
        queue = self.queues.get(entry.wa_id)
        if entry.direction == "out" and queue is not None:
            self.loop.call_soon_threadsafe(queue.put_nowait, entry)


class WaCitizen:
    """One number's chat: say() posts a signed webhook and returns that turn's replies."""

    def __init__(self, session: aiohttp.ClientSession, url: str, app_secret: str, replies: Replies,
                 wa_id: str, sample: WaSample, quiet: float = QUIET_S):
        self.session, self.url, self.app_secret, self.sample, self.quiet = session, url, app_secret, sample, quiet
        self.wa_id, self.replies = wa_id, replies
        self.queue: asyncio.Queue = replies.queues.setdefault(wa_id, asyncio.Queue())
        self.last_turn: tuple[float, int] | None = None  # (its start, its index in turn_s)

    def close(self) -> None:
        self._late()
        self.replies.queues.pop(self.wa_id, None)

    def _late(self) -> None:
        """Replies that came after the previous turn was taken as over: still its replies."""
        while not self.queue.empty():
            entry = self.queue.get_nowait()
            self.sample.late_replies += 1
            self.sample.replies += 1
            if self.last_turn is not None:
                started, index = self.last_turn
                self.sample.turn_s[index] = max(self.sample.turn_s[index], arrival(entry) - started)
                self.sample.accepted_s[index] = max(self.sample.accepted_s[index], entry.at - started)

    async def say(self, words: str) -> list[dict]:
        self._late()
        message = text(self.wa_id, words)
        body, headers = signed_delivery(message, self.app_secret)
        started_at, started = time.time(), time.perf_counter()
        try:
            async with self.session.post(self.url, data=body, headers=headers) as reply:
                await reply.read()
                status = reply.status
        except (aiohttp.ClientError, asyncio.TimeoutError):
            status = 0
        self.sample.webhook_s.append(time.perf_counter() - started)
        if status != 200:
            self.sample.webhook_refused += 1
            self.sample.errors += 1
            return []
        self.sample.wamids.append(message["id"])
        try:
            entries = [await asyncio.wait_for(self.queue.get(), REPLY_TIMEOUT_S)]
        except asyncio.TimeoutError:
            self.sample.unanswered += 1
            self.sample.errors += 1
            return []
        while True:
            try:
                entries.append(await asyncio.wait_for(self.queue.get(), self.quiet))
            except asyncio.TimeoutError:
                break
        self.sample.replies += len(entries)
        self.sample.first_s.append(arrival(entries[0]) - started_at)
        self.last_turn = (started_at, len(self.sample.turn_s))
        self.sample.turn_s.append(arrival(entries[-1]) - started_at)
        self.sample.accepted_s.append(entries[-1].at - started_at)
        payloads = [e.message for e in entries]
        if "gangguan" in bodies(payloads):  # the apology (utter_channel_unavailable)
            self.sample.errors += 1
        return payloads


async def wa_flow(citizen: WaCitizen, phone: str, texts) -> bool:
    """The REST bench's flow (tools/bench.py citizen()), over WhatsApp: status with the code
    that arrives as the authentication template, the certificate as a document, change of e-mail."""
    await citizen.say(texts("greet"))
    await citizen.say(texts("check_vaccination_status"))
    code = otp_code(await citizen.say("0" + phone[3:]))
    if code is None:
        return False
    ok = "Status vaksinasi" in bodies(await citizen.say(code))
    await citizen.say(texts("download_certificate"))
    ok = ok and any(p.get("type") == "document" for p in await citizen.say(texts("dose_2")))
    await citizen.say(texts("change_personal_info"))
    await citizen.say(f"warga{random.randint(1, 10**6)}@example.com")
    ok = ok and "berhasil" in bodies(await citizen.say(texts("affirm")))
    await citizen.say(texts("goodbye"))
    return ok


async def drive_whatsapp(url: str, app_secret: str, replies: Replies, users: int, seconds: float,
                         phones: asyncio.Queue, texts, quiet: float = QUIET_S) -> WaSample:
    sample = WaSample()
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=users * 2, keepalive_timeout=2)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), connector=connector) as session:
        async def one_slot() -> None:
            while time.monotonic() < deadline:
                phone = await phones.get()
                citizen = WaCitizen(session, url, app_secret, replies, phone.lstrip("+"), sample, quiet)
                try:
                    ok = await wa_flow(citizen, phone, texts)
                finally:
                    citizen.close()
                sample.flows += ok
                sample.errors += not ok
                phones.put_nowait(phone)

        started = time.monotonic()
        await asyncio.gather(*[one_slot() for _ in range(users)])
        sample.elapsed = time.monotonic() - started
    return sample


def ms(values: list[float]) -> dict:
    from tools.bench import percentile

    return {f"p{q}": round(percentile(values, q) * 1000, 1) if values else None for q in (50, 95, 99)}


def summarise_whatsapp(sample: WaSample, graph: dict, pending_left: int, cpu_s: dict[str, float]) -> dict:
    """The "whatsapp" part of results/bench.json."""
    turns = len(sample.turn_s)
    return {
        "turns": turns,
        "turns_per_s": round(turns / sample.elapsed, 1) if sample.elapsed else 0,
        "turn_ms": ms(sample.turn_s),
        "first_reply_ms": ms(sample.first_s),
        "last_reply_accepted_ms": ms(sample.accepted_s),
        "webhook_ms": ms(sample.webhook_s),
        "webhook_refused": sample.webhook_refused,
        "unanswered_turns": sample.unanswered,
        "late_replies": sample.late_replies,
        "replies_per_turn": round(sample.replies / turns, 2) if turns else None,
        "errors": sample.errors,
        "flows_completed": sample.flows,
        "graph": graph,
        "pending_left": pending_left,
        "cpu_ms_per_turn": {name: round(seconds * 1000 / turns, 1) if turns else None
                            for name, seconds in cpu_s.items()},
    }


def graph_counts(fake: FakeGraph, failed_after_retries: dict[str, float]) -> dict:
    """What the fake answered the /messages calls, and what the processes gave up on."""
    with fake._lock:
        answered = Counter(r.status for r in fake.requests if r.path.endswith("/messages"))
        uploads = sum(1 for r in fake.requests if r.path.endswith("/media"))
    return {"sends": sum(answered.values()), "accepted": answered.get(200, 0),
            "refused_by_status": {str(s): n for s, n in sorted(answered.items()) if s != 200},
            "refused_by_code": {str(c): n for c, n in sorted(fake.refused.items())},
            "media_uploads": uploads,
            # Each refusal with 429 is tried again by the client (whatsapp/graph.py) unless it was
            # the last attempt; what still failed is counted by the processes themselves.
            "failed_after_retries": failed_after_retries}


def scrape_graph_errors(ports: list[int]) -> dict[str, float]:
    """asisten_graph_api_errors_total by code, summed over the processes' metrics endpoints."""
    found: Counter = Counter()
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                page = reply.read().decode()
        except OSError:
            continue
        for line in page.splitlines():
            matched = re.match(r'asisten_graph_api_errors_total\{code="([^"]+)"\} ([0-9.e+]+)', line)
            if matched:
                found[matched.group(1)] += float(matched.group(2))
    return dict(found)


def pending_left(url: str, wamids: list[str]) -> int:
    """Of these messages, how many the channel still holds pending (whatsapp/dedupe.py)."""
    import psycopg

    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM whatsapp_seen_messages WHERE retry_at IS NOT NULL AND wamid = ANY(%s)",
                    (wamids,))
        count = cur.fetchone()[0]
    conn.close()
    return count


def write_report(report: dict, path: Path) -> None:
    """Under "whatsapp" in results/bench.json, the REST bench's figures kept."""
    existing = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except ValueError:
            existing = {}
    existing["whatsapp"] = report
    path.write_text(json.dumps(existing, indent=2))


def print_report(report: dict) -> None:
    turn, first, hook = report["turn_ms"], report["first_reply_ms"], report["webhook_ms"]
    limits = report["limits"]
    print()
    print(f"WhatsApp, {report['users']} users, {report['duration_s']:g} s; fake Graph API: "
          f"{limits['throughput_per_s']:g} msg/s per number, pair {limits['pair_per_s']:.3g}/s "
          f"(burst {limits['pair_burst']:g}), latency {limits['latency_min']:g}-{limits['latency_max']:g} s")
    print(f"{'':24}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    rows = (("POST -> last reply", turn), ("POST -> first reply", first),
            ("... last one accepted", report["last_reply_accepted_ms"]), ("webhook answer", hook))
    for label, row in rows:
        print(f"{label:24}{row['p50']!s:>9}{row['p95']!s:>9}{row['p99']!s:>9}")
    print(f"turns {report['turns']}, {report['turns_per_s']} turns/s, {report['replies_per_turn']} replies "
          f"per turn; flows {report['flows_completed']}, errors {report['errors']} (unanswered "
          f"{report['unanswered_turns']}, webhook refused {report['webhook_refused']}), late replies "
          f"{report['late_replies']}")
    graph = report["graph"]
    print(f"Graph API: {graph['sends']} sends, {graph['accepted']} accepted, refused {graph['refused_by_code']} "
          f"(tried again), failed after retries {graph['failed_after_retries']}; pending left "
          f"{report['pending_left']}")
    print(f"CPU ms per turn: {report['cpu_ms_per_turn']}")


def run(args) -> int:
    """`tools.bench --channel whatsapp`: start everything, drive, report."""
    import psutil

    from backend import Backend
    from backend.seed import bench_phone, seed_bench
    from tools.bench import BENCH_ACCOUNTS, BENCH_DIR, LOAD_ENV, RESULTS, MixTexts, NewTexts, cpu_seconds, rasa_pid

    users = int(args.users.split(",")[-1]) if args.users else 16
    texts = NewTexts() if args.texts.split(",")[0] == "new" else MixTexts()
    limits = Limits(throughput_per_s=args.wa_throughput, pair_per_s=PAIR_PER_S, pair_burst=PAIR_BURST,
                    latency_min=LATENCY_S[0], latency_max=LATENCY_S[1])
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(exist_ok=True)

    url = database_url(ROOT / "var")
    prepare_database(url)
    backend = Backend.create(dsn=url)
    seed_bench(backend.db, BENCH_ACCOUNTS)
    backend.db.close()

    app_secret, verify_token = secrets.token_hex(16), secrets.token_hex(8)
    fake = FakeGraph(limits=limits).start()
    ports = {name: free_port() for name in ("rasa", "actions", "metrics_rasa", "metrics_actions")}
    # Production's OTP cap for all citizens together; the per-number hourly cap stays raised as
    # in the REST bench (accounts come back within the hour across runs).
    env = {**LOAD_ENV, "OTP_MAX_SENDS_PER_MINUTE": DEPLOY_OTP_PER_MINUTE, "OTP_SENDER": "whatsapp",
           **fake.env(app_secret, verify_token)}
    stack = Stack(url, rasa_port=ports["rasa"], action_port=ports["actions"], log_dir=BENCH_DIR / "log-whatsapp",
                  extra_env=env, metrics_port_rasa=ports["metrics_rasa"],
                  metrics_port_actions=ports["metrics_actions"])
    webhook_url = f"http://127.0.0.1:{ports['rasa']}/webhooks/whatsapp/webhook"
    try:
        log("starting our stack with the WhatsApp channel pointed at the fake Graph API ...")
        started = time.monotonic()
        stack.start_actions()
        stack.start_rasa()
        processes = {"rasa": rasa_pid(stack),
                     "actions": next(p.pid for p in stack.processes if "actions.server" in p.args)}

        phones: asyncio.Queue = asyncio.Queue()
        start = int(time.time() // 60) * 397 % BENCH_ACCOUNTS
        for i in range(BENCH_ACCOUNTS):
            phones.put_nowait(bench_phone((start + i) % BENCH_ACCOUNTS + 1))

        async def everything() -> tuple[WaSample, dict, float]:
            replies = Replies(asyncio.get_running_loop())
            fake.listeners.append(replies.hear)
            # A first answer (the model loaded, the channel's pools open) before the clock runs.
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
                warm = WaSample()
                citizen = WaCitizen(session, webhook_url, app_secret, replies, "628990000" + str(
                    secrets.randbelow(10**6)).zfill(6), warm)
                for _ in range(5):
                    if await citizen.say("halo"):
                        break
                citizen.close()
                if not warm.turn_s:
                    raise RuntimeError(f"no answer over WhatsApp; see {stack.log_dir}")
            first_answer_s = time.monotonic() - started
            fake.clear()
            fake.refused.clear()
            cpu_before = {name: cpu_seconds([pid]) for name, pid in processes.items()}
            log(f"whatsapp: {users} user(s), {args.duration:.0f} s")
            sample = await drive_whatsapp(webhook_url, app_secret, replies, users, args.duration, phones, texts,
                                          args.wa_quiet)
            cpu = {name: cpu_seconds([pid]) - cpu_before[name] for name, pid in processes.items()}
            return sample, cpu, first_answer_s

        sample, cpu, first_answer_s = asyncio.run(everything())
        deadline = time.monotonic() + DRAIN_S
        left = pending_left(url, sample.wamids)
        while left and time.monotonic() < deadline:
            time.sleep(1)
            left = pending_left(url, sample.wamids)
        graph = graph_counts(fake, scrape_graph_errors([ports["metrics_rasa"], ports["metrics_actions"]]))
        report = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["python -m tools.bench"] + sys.argv[1:]),
            "users": users, "duration_s": args.duration, "texts": texts.kind, "quiet_s": args.wa_quiet,
            "limits": dataclasses.asdict(limits),
            "machine": {"cpus": psutil.cpu_count(), "load_avg_1m": round(psutil.getloadavg()[0], 2)},
            "start_to_first_answer_s": round(first_answer_s, 1),
            **summarise_whatsapp(sample, graph, left, cpu),
        }
        write_report(report, RESULTS / "bench.json")
        print_report(report)
        print(f"written: {RESULTS / 'bench.json'} (key \"whatsapp\")")
        return 0
    finally:
        stack.stop()
        fake.stop()
