"""The benchmark (`make bench`): simulated citizens against our stack and stock Rasa, same run.

    python -m tools.bench                       # 1 and 16 users, alternating rounds
    python -m tools.bench --mode cluster        # our stack as 2 Rasa + 2 action servers behind
                                                #   a round-robin proxy, vs 1 + 1
    python -m tools.bench --workers 2            # our Rasa with 2 Sanic workers (Redis lock store)
    python -m tools.bench --duration 10 --rounds 1 --users 1,4,16
    python -m tools.bench --patches rule_index --users 16   # RASA_PATCHES=all against all but
                                                #   rule_index: what that patch buys
    python -m tools.bench --texts new --users 16  # only texts never sent before in the run
    python -m tools.bench --channel whatsapp     # 16 citizens over the WhatsApp webhook, the fake
                                                #   Graph API with Meta's limits (tools/bench_whatsapp.py)

Our citizens go through real flows over the REST channel: greeting, status with the OTP read
from the outbox, download of a certificate (and the PDF behind the link), change of e-mail.
Stock Rasa is `rasa init`'s assistant, trained in var/bench/stock with this project's Rasa,
driven with its own greet / mood / goodbye turns. Rounds alternate between the two so machine
noise hits both alike. Each runs twice (--texts mix,new): the realistic mix, where citizens
repeat the usual texts, and every text new (a phrasing, a particle, a name, a typo: NewTexts),
where no cache of parsed texts can hit, reported as ours_new and stock_new beside them. Prints a table (with the CPU time the Rasa process spent per turn) and
writes results/bench.json and results/bench.png.
The stack it starts raises the OTP send limits (load tests may; nothing else changes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from tools.stack import ROOT, VENV_BIN, Stack, database_url, log, prepare_database, wait_http

BENCH_DIR = ROOT / "var" / "bench"
RESULTS = ROOT / "results"
BENCH_ACCOUNTS = 3000
LOAD_ENV = {"OTP_MAX_SENDS_PER_HOUR": "1000000", "OTP_MAX_SENDS_PER_MINUTE": "1000000"}


# --- the outbox, read incrementally --------------------------------------------------------------


class OutboxReader:
    """The latest code per phone from the development outbox, reading only what was appended."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.codes: dict[str, str] = {}

    def code_for(self, phone: str) -> str | None:
        if self.path.exists():
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self.offset += len(complete)
            for line in complete.decode().splitlines():
                row = json.loads(line)
                found = re.search(r"\b(\d{6})\b", row["text"])
                if found:
                    self.codes[row["to"]] = found.group(1)
        return self.codes.pop(phone, None)


# --- texts: the realistic mix, or every one new -------------------------------------------------

TEXT_KINDS = ("mix", "new")

# What a citizen writes for each step of a flow, as the realistic mix sends it every time.
MIX_TEXTS = {"greet": "halo", "check_vaccination_status": "cek status vaksin saya",
             "download_certificate": "download sertifikat", "dose_2": "2",
             "change_personal_info": "mau ganti email", "affirm": "ya", "goodbye": "selesai"}
# The same steps said the ways citizens say them; NewTexts varies them further.
NEW_TEXTS = {
    "greet": ["halo", "hai", "halo kak", "selamat pagi", "selamat siang", "selamat sore", "permisi",
              "hallo", "pagi min"],
    "check_vaccination_status": ["cek status vaksin saya", "mau cek status vaksin", "tolong cek status vaksin saya",
                                 "cek status vaksinasi saya", "saya mau cek status vaksin", "status vaksin saya"],
    "download_certificate": ["download sertifikat", "mau download sertifikat", "download sertifikat vaksin",
                             "saya mau download sertifikat", "tolong download sertifikat saya",
                             "minta download sertifikat vaksin"],
    "dose_2": ["2", "kedua", "dosis 2", "dosis kedua", "yang kedua", "yg kedua", "dosis yang kedua"],
    "change_personal_info": ["mau ganti email", "ganti email saya", "saya mau ganti email", "tolong ganti email",
                             "mau ganti alamat email", "ganti email dong"],
    "affirm": ["ya", "iya", "ya benar", "iya betul", "betul", "ya sudah benar", "iya benar"],
    "goodbye": ["selesai", "sudah selesai", "sampai jumpa", "dadah", "selesai dulu", "sudah selesai ya"],
    # stock Rasa's `rasa init` assistant
    "en_greet": ["hello", "hi", "hey", "hi there", "hello there", "good morning", "good evening"],
    "en_mood_great": ["I am feeling great", "I am good", "feeling very good", "I am great", "so good today",
                      "I feel wonderful"],
    "en_mood_unhappy": ["I am sad", "I feel sad", "I am unhappy", "feeling bad today", "I am not good",
                        "very sad"],
    "en_affirm": ["yes", "yes indeed", "of course", "that sounds good", "correct"],
    "en_bot_challenge": ["are you a bot?", "am I talking to a bot?", "are you a human?", "am I talking to a human?"],
    "en_goodbye": ["bye", "goodbye", "see you later", "see you around", "have a nice day", "bye bye"],
}
PARTICLES = {"id": ["", " kak", " min", " dong", " ya", " pak", " bu", " mas", " mbak", " gan", " sis"],
             "en": ["", " please", " then", " now", " friend", " again", " today"]}
NAMES = ["budi", "siti", "agus", "dewi", "rina", "andi", "wati", "joko", "yusuf", "putri", "eko", "ayu",
         "rudi", "lina", "hendra", "fajar", "indah", "bayu", "rini", "tono"]
# Words a typo would change the meaning of: the channel reads them as data (actions/parsing.py).
KEEP_AS_TYPED = {"ya", "iya", "betul", "benar", "yes", "2", "kedua", "dosis", "email"}


class MixTexts:
    """The realistic mix: each step's usual text, the same every flow."""

    kind = "mix"

    def __call__(self, step: str) -> str:
        return MIX_TEXTS[step]


class NewTexts:
    """Every text never sent before in the run, so that no cache of parsed texts can hit: a
    usual phrasing, a particle, now and then a name, a typo (a letter doubled or dropped)."""

    kind = "new"

    def __init__(self, seed: int | None = None):
        self.random = random.Random(seed)
        self.seen: set[str] = set()

    def __call__(self, step: str) -> str:
        for attempt in range(2000):
            text = self._variant(step, typos=self.random.random() < 0.5 or attempt > 20, more=attempt // 200)
            if text not in self.seen:
                self.seen.add(text)
                return text
        raise RuntimeError(f"no new text left for {step}")  # not reached at bench sizes

    def _variant(self, step: str, typos: bool, more: int) -> str:
        language = "en" if step.startswith("en_") else "id"
        text, question = self.random.choice(NEW_TEXTS[step]), ""
        if text.endswith("?"):
            text, question = text[:-1], "?"
        text += self.random.choice(PARTICLES[language]) + question
        if step in ("greet", "en_greet") and self.random.random() < 0.5:
            name = self.random.choice(NAMES)
            text += f", saya {name}" if language == "id" else f", I am {name.title()}"
        for _ in range(typos + more):
            text = self._typo(text)
        return text

    def _typo(self, text: str) -> str:
        words = text.split(" ")
        free = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha() and w.lower() not in KEEP_AS_TYPED]
        if not free:
            return text
        i = self.random.choice(free)
        word, at = words[i], self.random.randrange(1, len(words[i]) - 1)
        words[i] = word[:at] + word[at] + word[at:] if self.random.random() < 0.6 else word[:at] + word[at + 1:]
        return " ".join(words)


@dataclass
class OwnDatabase:
    """A load tool's own embedded PostgreSQL, seeded, and what its citizens need from it."""
    folder: Path
    url: str
    env: dict  # the stack's extra environment: raised OTP limits, VAR_DIR, OTP_OUTBOX
    backend: Any
    phones: asyncio.Queue
    outbox: OutboxReader

    @property
    def pgdata(self) -> Path:
        return self.folder / "pgdata"


def own_database(folder: Path, accounts: int) -> OwnDatabase:
    """A fresh database under `folder` (wiped: only this run's data, never a developer's),
    prepared and seeded with `accounts` bench citizens, queued in random order; this process's
    environment points at it. The embedded PostgreSQL stops when this process exits."""
    from backend import Backend, embedded
    from backend.seed import bench_phone, seed_bench

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    RESULTS.mkdir(exist_ok=True)
    env = {**LOAD_ENV, "VAR_DIR": str(folder), "OTP_OUTBOX": str(folder / "otp_outbox.jsonl")}
    os.environ.update(env)
    os.environ.pop("DATABASE_URL", None)
    url = embedded.start(folder / "pgdata")
    prepare_database(url)
    backend = Backend.create(dsn=url)
    seed_bench(backend.db, accounts)
    phones: asyncio.Queue = asyncio.Queue()
    for i in random.sample(range(1, accounts + 1), accounts):
        phones.put_nowait(bench_phone(i))
    return OwnDatabase(folder, url, env, backend, phones, OutboxReader(Path(env["OTP_OUTBOX"])))


def texts_for(kind: str, seed: int | None = None) -> MixTexts | NewTexts:
    return MixTexts() if kind == "mix" else NewTexts(seed)


# --- simulated users -----------------------------------------------------------------------------


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)  # seconds per turn
    errors: int = 0
    flows: int = 0
    pdf_ms: list[float] = field(default_factory=list)
    rasa_cpu_s: float = 0.0  # CPU time of the Rasa process(es) serving the round
    elapsed: float = 0.0


class Client:
    def __init__(self, session: aiohttp.ClientSession, url: str, sample: Sample):
        self.session, self.url, self.sample = session, url, sample

    async def say(self, sender: str, text: str) -> str:
        started = time.perf_counter()
        try:
            async with self.session.post(self.url, json={"sender": sender, "message": text}) as reply:
                messages = await reply.json() if reply.status == 200 else []
        except (aiohttp.ClientError, asyncio.TimeoutError):
            messages = []
        self.sample.latencies.append(time.perf_counter() - started)
        text_out = "\n".join(m.get("text", "") for m in messages)
        if not text_out or "gangguan" in text_out:
            self.sample.errors += 1
        return text_out


async def citizen(client: Client, outbox: OutboxReader, phones: asyncio.Queue, deadline: float,
                  texts: MixTexts | NewTexts) -> None:
    """One citizen after another: status (verifies), download, change of e-mail, goodbye."""
    while time.monotonic() < deadline:
        phone = await phones.get()
        sender = f"bench-{uuid.uuid4().hex[:12]}"
        ok = True
        await client.say(sender, texts("greet"))
        await client.say(sender, texts("check_vaccination_status"))
        await client.say(sender, "0" + phone[3:])
        code = None
        for _ in range(50):  # the code is in the outbox once the reply came back
            code = outbox.code_for(phone)
            if code:
                break
            await asyncio.sleep(0.01)
        if code is None:
            client.sample.errors += 1
            ok = False
        else:
            reply = await client.say(sender, code)
            ok = "Status vaksinasi" in reply
            await client.say(sender, texts("download_certificate"))
            reply = await client.say(sender, texts("dose_2"))
            link = re.search(r"https?://\S+\.pdf", reply)
            if link:
                started = time.perf_counter()
                try:
                    async with client.session.get(link.group(0)) as pdf:
                        body = await pdf.read()
                    ok = ok and pdf.status == 200 and body.startswith(b"%PDF")
                    client.sample.pdf_ms.append((time.perf_counter() - started) * 1000)
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    ok = False
            else:
                ok = False
            await client.say(sender, texts("change_personal_info"))
            await client.say(sender, f"warga{random.randint(1, 10**6)}@example.com")
            reply = await client.say(sender, texts("affirm"))
            ok = ok and "berhasil" in reply
            await client.say(sender, texts("goodbye"))
        client.sample.flows += ok
        client.sample.errors += not ok
        phones.put_nowait(phone)  # back at the end of the queue: reused after others


STOCK_TURNS = [["hello", "I am feeling great", "bye"],
               ["hi there", "I am sad", "yes", "goodbye"],
               ["hey", "are you a bot?", "very good", "see you later"]]


STOCK_STEPS = [["en_greet", "en_mood_great", "en_goodbye"],
               ["en_greet", "en_mood_unhappy", "en_affirm", "en_goodbye"],
               ["en_greet", "en_bot_challenge", "en_mood_great", "en_goodbye"]]


async def stock_user(client: Client, deadline: float, texts: MixTexts | NewTexts) -> None:
    while time.monotonic() < deadline:
        sender = f"stock-{uuid.uuid4().hex[:12]}"
        flow = random.randrange(len(STOCK_TURNS))
        said = STOCK_TURNS[flow] if texts.kind == "mix" else [texts(step) for step in STOCK_STEPS[flow]]
        for text in said:
            await client.say(sender, text)
        client.sample.flows += 1


async def drive(url: str, users: int, seconds: float, kind: str, outbox: OutboxReader | None,
                phones: asyncio.Queue | None, texts: MixTexts | NewTexts | None = None) -> Sample:
    texts = texts or MixTexts()
    sample = Sample()
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=30)
    # Idle connections are dropped after 2 s, before the servers (Sanic) close them at 5 s.
    connector = aiohttp.TCPConnector(limit=users * 2, keepalive_timeout=2)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        client = Client(session, url, sample)
        if kind == "ours":
            tasks = [citizen(client, outbox, phones, deadline, texts) for _ in range(users)]
        else:
            tasks = [stock_user(client, deadline, texts) for _ in range(users)]
        started = time.monotonic()
        await asyncio.gather(*tasks)
        sample.elapsed = time.monotonic() - started
    return sample


def run_name(target: str, texts: str) -> str:
    """The name a run is reported under: the target's for the mix, NAME_new for new texts."""
    return target if texts == "mix" else f"{target}_new"


def ratios(load: dict, targets: list[str], kinds: list[str], users: list[int]) -> dict:
    """Throughput of the first target over the second's, per user count: "ratio" for the mix,
    "ratio_new" for new texts."""
    out = {}
    for kind in kinds:
        first, base = (load[run_name(name, kind)] for name in targets[:2])
        out["ratio" if kind == "mix" else "ratio_new"] = {
            str(n): round(first[str(n)]["turns_per_s"] / max(base[str(n)]["turns_per_s"], 0.001), 2) for n in users}
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def summarise(samples: list[Sample]) -> dict:
    latencies = [x for s in samples for x in s.latencies]
    elapsed = sum(s.elapsed for s in samples)
    pdf = [x for s in samples for x in s.pdf_ms]
    return {
        "turns": len(latencies),
        "turns_per_s": round(len(latencies) / elapsed, 1) if elapsed else 0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 95) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "errors": sum(s.errors for s in samples),
        "flows_completed": sum(s.flows for s in samples),
        "pdf_download_p50_ms": round(statistics.median(pdf), 1) if pdf else None,
        "rasa_cpu_ms_per_turn": round(sum(s.rasa_cpu_s for s in samples) * 1000 / len(latencies), 1) if latencies else None,
    }


# --- processes -----------------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes and their children (Sanic workers)."""
    total = 0.0
    for pid in pids:
        process = psutil.Process(pid)
        for p in [process] + process.children(recursive=True):
            try:
                times = p.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
    return total


def rss_mb(pid: int) -> float:
    process = psutil.Process(pid)
    return round(sum(p.memory_info().rss for p in [process] + process.children(recursive=True)) / 2**20, 1)


def start_stock(port: int) -> tuple[subprocess.Popen, dict]:
    """`rasa init` in a scratch folder, trained once and kept; returns the running server."""
    folder = BENCH_DIR / "stock"
    facts = {}
    model_dir = folder / "models"
    if not (folder / "config.yml").exists() or not list(model_dir.glob("*.tar.gz")):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        log("creating and training the stock `rasa init` assistant ...")
        started = time.monotonic()
        subprocess.run([str(VENV_BIN / "rasa"), "init", "--no-prompt", "--init-dir", str(folder)],
                       cwd=folder, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        facts["training_s"] = round(time.monotonic() - started, 1)
        (folder / "training_s.txt").write_text(str(facts["training_s"]))
    else:
        facts["training_s"] = float((folder / "training_s.txt").read_text()) if (folder / "training_s.txt").exists() else None
    env = dict(os.environ, SQLALCHEMY_SILENCE_UBER_WARNING="1", TF_CPP_MIN_LOG_LEVEL="2")
    out = open(BENCH_DIR / "stock.log", "ab")
    started = time.monotonic()
    process = subprocess.Popen([str(VENV_BIN / "rasa"), "run", "--port", str(port), "--interface", "127.0.0.1"],
                               cwd=folder, env=env, stdout=out, stderr=out, start_new_session=True)
    first_answer(f"http://127.0.0.1:{port}/webhooks/rest/webhook", process, "hello")
    facts["start_to_first_answer_s"] = round(time.monotonic() - started, 1)
    return process, facts


def first_answer(url: str, process: subprocess.Popen, text: str, timeout: float = 300) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server behind {url} exited")
        try:
            if requests.post(url, json={"sender": "warmup", "message": text}, timeout=5).json():
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"no answer from {url}")


def pid_listening(port: int) -> int:
    return next(c.pid for c in psutil.net_connections("tcp")
                if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN)


def rasa_pid(stack: Stack) -> int:
    return next(p.pid for p in stack.processes if "rasa" in " ".join(map(str, p.args)) and "run" in p.args)


def start_ours(url: str, ports: tuple[int, int], log_dir: Path, workers: int = 1) -> tuple[Stack, dict]:
    stack = Stack(url, rasa_port=ports[0], action_port=ports[1], log_dir=log_dir, extra_env=LOAD_ENV,
                  workers=workers)
    started = time.monotonic()
    stack.start_actions()
    stack.start_rasa()
    process = next(p for p in stack.processes if "run" in p.args)
    first_answer(f"http://127.0.0.1:{ports[0]}/webhooks/rest/webhook", process, "halo")
    return stack, {"start_to_first_answer_s": round(time.monotonic() - started, 1)}


# --- cluster mode: a round-robin proxy -----------------------------------------------------------


async def round_robin_proxy(listen_port: int, upstreams: list[str], stop: asyncio.Event) -> None:
    """Every request to the next upstream in turn: each message of a conversation may land on
    another process, which is what the shared tracker store and lock store must survive."""
    from aiohttp import web

    counter = {"n": 0}
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))

    async def forward(request: web.Request) -> web.Response:
        upstream = upstreams[counter["n"] % len(upstreams)]
        counter["n"] += 1
        body = await request.read()
        async with session.request(request.method, upstream + request.path_qs, data=body,
                                   headers={"Content-Type": request.headers.get("Content-Type", "")}) as reply:
            return web.Response(body=await reply.read(), status=reply.status,
                                content_type=reply.content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", listen_port).start()
    await stop.wait()
    await runner.cleanup()
    await session.close()


# --- the run -------------------------------------------------------------------------------------


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in report["load"].items():
        users = sorted(int(u) for u in rows)
        left.plot(users, [rows[str(u)]["p50_ms"] for u in users], marker="o", label=f"{name} p50")
        left.plot(users, [rows[str(u)]["p99_ms"] for u in users], marker="x", linestyle="--", label=f"{name} p99")
        right.plot(users, [rows[str(u)]["turns_per_s"] for u in users], marker="o", label=name)
    left.set(xlabel="concurrent users", ylabel="latency per turn (ms)", title="Latency against load")
    right.set(xlabel="concurrent users", ylabel="turns per second", title="Throughput")
    left.legend()
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channel", choices=["rest", "whatsapp"], default="rest",
                        help="whatsapp: our stack alone, driven through the WhatsApp webhook with the fake "
                             "Graph API at Meta's limits (tools/bench_whatsapp.py); written under \"whatsapp\"")
    parser.add_argument("--users", default=None, help="REST: the loads, default 1,16; whatsapp: one, default 16")
    parser.add_argument("--duration", type=float, default=20, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mode", choices=["single", "cluster"], default="single")
    parser.add_argument("--patches", metavar="NAME[,NAME]",
                        help="instead of stock Rasa: two stacks of ours side by side, RASA_PATCHES=all against "
                             "all but these patches (rasa_server/patches/), to measure what they buy")
    parser.add_argument("--workers", type=int, default=1,
                        help="single mode: Rasa's Sanic workers (2 share a Redis lock store)")
    parser.add_argument("--texts", default="mix,new", metavar="mix|new|mix,new",
                        help="mix: each step's usual text, as citizens repeat it; new: every text never sent "
                             "before in the run, so no cache of parsed texts can hit (reported as NAME_new)")
    parser.add_argument("--wa-throughput", type=float, default=None, metavar="MSG_PER_S",
                        help="whatsapp: the number's throughput at the fake (default 1000, the tier the capacity "
                             "plan needs; Meta's default is 80)")
    parser.add_argument("--wa-quiet", type=float, default=None, metavar="SECONDS",
                        help="whatsapp: replies stopping this long end a turn (default 0.5)")
    args = parser.parse_args()
    if args.channel == "whatsapp":
        from tools import bench_whatsapp

        if args.wa_throughput is None:
            args.wa_throughput = bench_whatsapp.THROUGHPUT_PER_S
        if args.wa_quiet is None:
            args.wa_quiet = bench_whatsapp.QUIET_S
        if args.texts not in ("mix,new", "mix", "new"):
            parser.error(f"--texts: mix or new for --channel whatsapp, not {args.texts!r}")
        args.texts = "new" if args.texts == "new" else "mix"  # one run: the mix unless told
        return bench_whatsapp.run(args)
    if args.wa_throughput is not None or args.wa_quiet is not None:
        parser.error("--wa-throughput and --wa-quiet are for --channel whatsapp")
    users = [int(u) for u in (args.users or "1,16").split(",")]
    text_kinds = list(dict.fromkeys(args.texts.split(",")))
    if not text_kinds or set(text_kinds) - set(TEXT_KINDS):
        parser.error(f"--texts: mix, new or mix,new, not {args.texts!r}")
    if args.patches:
        from rasa_server import patches

        try:
            left_out = patches.parse(args.patches)
        except patches.SelectionError as error:  # before anything starts
            parser.error(str(error))
        without = ",".join(t for t in patches.TOPICS if t not in left_out) or "none"
        args.mode = "patches"
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    os.environ.update(LOAD_ENV)

    url = database_url(ROOT / "var")
    prepare_database(url)
    from backend import Backend
    from backend.seed import bench_phone, seed_bench

    backend = Backend.create(dsn=url)
    seed_bench(backend.db, BENCH_ACCOUNTS)
    certificate_pdf = pdf_build_times()  # before any server runs: this process alone on the CPU
    outbox_path = backend.settings.otp_outbox
    backend.db.close()

    stacks, targets, facts, started_by_us = [], {}, {}, []
    try:
        if args.patches:
            # Both stacks up at once, driven in alternating rounds as against stock Rasa.
            # --patches none: the same code on both sides, the A/A check of the set-up itself.
            names = {"all": "all", ("without_" + "_".join(left_out)) if left_out else "all_again": without}
            for (name, selection), ports in zip(names.items(), ((5105, 5155), (5106, 5156))):
                stack = Stack(url, rasa_port=ports[0], action_port=ports[1], log_dir=BENCH_DIR / f"log-{name}",
                              extra_env={**LOAD_ENV, "RASA_PATCHES": selection})
                stack.start_actions()
                stack.start_rasa()
                stacks.append(stack)
                targets[name] = f"http://127.0.0.1:{ports[0]}/webhooks/rest/webhook"
            pids = {name: rasa_pid(stack) for name, stack in zip(names, stacks)}
            serving = {name: [pid] for name, pid in pids.items()}
        elif args.mode == "single":
            try:
                wait_http("http://127.0.0.1:5005/", 1)
                log("using the stack already running on 5005 (start it with raised OTP limits: see README)")
                targets["ours"] = "http://127.0.0.1:5005/webhooks/rest/webhook"
                ours_pid = pid_listening(5005)
            except TimeoutError:
                log("starting our stack (make serve) ...")
                stack, facts["ours"] = start_ours(url, (5005, 5055), ROOT / "var" / "log", args.workers)
                stacks.append(stack)
                ours_pid = rasa_pid(stack)
                targets["ours"] = "http://127.0.0.1:5005/webhooks/rest/webhook"
            stock, facts["stock"] = start_stock(5006)
            started_by_us.append(stock)
            targets["stock"] = "http://127.0.0.1:5006/webhooks/rest/webhook"
            pids = {"ours": ours_pid, "stock": stock.pid}
            serving = {name: [pid] for name, pid in pids.items()}
        else:
            # Two Rasa processes and two action servers sharing PostgreSQL and a Redis lock store,
            # against one of them alone (same lock store), through the same client.
            for name, ports in (("a", (5105, 5155)), ("b", (5106, 5156))):
                stack = Stack(url, rasa_port=ports[0], action_port=ports[1], log_dir=BENCH_DIR / f"log-{name}",
                              extra_env=LOAD_ENV, lock_store="redis", redis_port=6391)
                stack.start_actions()
                stack.start_rasa()
                stacks.append(stack)
            targets["one_process"] = "http://127.0.0.1:5105/webhooks/rest/webhook"
            targets["two_processes"] = "http://127.0.0.1:5200/webhooks/rest/webhook"
            pids = {"process_a": rasa_pid(stacks[0]), "process_b": rasa_pid(stacks[1])}
            serving = {"one_process": [pids["process_a"]], "two_processes": list(pids.values())}

        # Each account is used once per run. A run starts where the clock says (a new place every
        # minute), so that a run right after another does not ask codes for the numbers it just
        # used: those would be refused for OTP_RESEND_SECONDS and counted as errors.
        phones: asyncio.Queue = asyncio.Queue()
        start = int(time.time() // 60) * 397 % BENCH_ACCOUNTS
        for i in range(BENCH_ACCOUNTS):
            phones.put_nowait(bench_phone((start + i) % BENCH_ACCOUNTS + 1))
        outbox = OutboxReader(Path(outbox_path))
        runs = {run_name(name, kind): (name, kind) for kind in text_kinds for name in targets}
        results: dict[str, dict[int, list[Sample]]] = {run: {u: [] for u in users} for run in runs}
        new_texts = NewTexts()  # one for the run: no text twice, whichever stack it went to

        async def run_all() -> None:
            stop = asyncio.Event()
            proxy = None
            if args.mode == "cluster":
                proxy = asyncio.create_task(round_robin_proxy(
                    5200, ["http://127.0.0.1:5105", "http://127.0.0.1:5106"], stop))
                await asyncio.sleep(0.5)
            for n in users:
                for r in range(args.rounds):
                    for run, (name, texts) in runs.items():
                        kind = "stock" if name == "stock" else "ours"
                        log(f"{run}: {n} user(s), round {r + 1}/{args.rounds}, {args.duration:.0f} s")
                        cpu_before = cpu_seconds(serving[name])
                        sample = await drive(targets[name], n, args.duration, kind, outbox, phones,
                                             new_texts if texts == "new" else MixTexts())
                        sample.rasa_cpu_s = cpu_seconds(serving[name]) - cpu_before
                        results[run][n].append(sample)
            stop.set()
            if proxy:
                await proxy

        asyncio.run(run_all())

        report = {
            "mode": args.mode, "texts": text_kinds, "workers": args.workers if args.mode == "single" else 1, "duration_s": args.duration, "rounds": args.rounds,
            "machine": {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)},
            "load": {name: {str(n): summarise(samples) for n, samples in rows.items()} for name, rows in results.items()},
            "rss_mb": {name: rss_mb(pid) for name, pid in pids.items()},
            "startup": facts,
        }
        if args.mode == "single":
            action_pid = next((p.pid for s in stacks for p in s.processes if "actions.server" in p.args), None)
            if action_pid:
                report["rss_mb"]["ours_action_server"] = rss_mb(action_pid)
            model = ROOT / "models" / "current.tar.gz"
            report["model_mb"] = round(model.stat().st_size / 2**20, 1)
        names = list(targets)
        report.update(ratios(report["load"], names, text_kinds, users))
        report["certificate_pdf"] = certificate_pdf
        stem = f"bench-without-{'-'.join(left_out) or 'nothing'}" if args.patches else "bench"
        if args.patches:
            report["patches_left_out"] = list(left_out)
        previous = RESULTS / f"{stem}.json"
        if previous.exists():  # the WhatsApp run's figures (--channel whatsapp) stay
            try:
                kept = json.loads(previous.read_text()).get("whatsapp")
            except ValueError:
                kept = None
            if kept is not None:
                report["whatsapp"] = kept
        (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2))
        plot(report, RESULTS / f"{stem}.png")
        print_table(report, list(runs))
        return 0
    finally:
        for s in stacks:
            s.stop()
        for process in started_by_us:
            os.killpg(process.pid, 15)
            process.wait(timeout=20)


def pdf_build_times() -> dict:
    """Building a certificate PDF: first time and from the cache (per certificate and version)."""
    from datetime import date

    from backend.certificates import CertificateCache, build_pdf

    from datetime import datetime, timezone

    data = {"certificate_id": 1, "version": 1, "full_name": "Warga Uji", "nik": "3174201501900001",
            "issued_at": datetime(2021, 8, 3, tzinfo=timezone.utc),
            "birth_date": date(1990, 1, 15), "dose": 2, "vaccine": "CoronaVac",
            "vaccinated_on": date(2021, 8, 2), "facility": "Puskesmas Uji", "certificate_number": "UJI-000001-2"}
    build_pdf(data)  # imports and fonts warmed
    cold = []
    for i in range(20):
        started = time.perf_counter()
        build_pdf({**data, "certificate_id": i})
        cold.append((time.perf_counter() - started) * 1000)
    cache = CertificateCache()
    cache.get_pdf(data)
    warm = []
    for _ in range(200):
        started = time.perf_counter()
        cache.get_pdf(data)
        warm.append((time.perf_counter() - started) * 1000)
    return {"build_p50_ms": round(statistics.median(cold), 2), "cached_p50_ms": round(statistics.median(warm), 4)}


def print_table(report: dict, names: list[str]) -> None:
    print()
    print(f"{'':16}{'users':>6}{'turns/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}{'flows':>7}"
          f"{'Rasa CPU ms/turn':>18}")
    for name in names:
        for n, row in report["load"][name].items():
            print(f"{name:16}{n:>6}{row['turns_per_s']:>10}{row['p50_ms']:>9}{row['p95_ms']:>9}"
                  f"{row['p99_ms']:>9}{row['errors']:>8}{row['flows_completed']:>7}{row['rasa_cpu_ms_per_turn']:>18}")
    pair = list(dict.fromkeys(name.removesuffix("_new") for name in names))[:2]
    for key, label in (("ratio", "realistic mix"), ("ratio_new", "every text new")):
        if key in report:
            print(f"\nthroughput ratio {pair[0]} / {pair[1]}, {label}: {report[key]}")
    print(f"resident memory (MB): {report['rss_mb']}")
    print(f"start to first answer / training: {report['startup']}")
    print(f"certificate PDF: {report['certificate_pdf']}")
    print(f"written: {RESULTS / 'bench.json'}, {RESULTS / 'bench.png'}")


if __name__ == "__main__":
    sys.exit(main())
