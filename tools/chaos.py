"""The chaos run (`make chaos`): simulated citizens on the real flows while processes fail.

    python -m tools.chaos                   # 16 citizens, about 4 minutes, WORKERS=2
    python -m tools.chaos --seconds 120     # shorter
    python -m tools.chaos --workers 1       # no Redis, so no Redis fault

It starts a stack of its own (as `make serve` does, supervised: tools/stack.py) on other ports,
with its own embedded PostgreSQL under var/chaos (wiped at each run), so a developer's data is
never touched. Citizens (tools/bench.py's client and outbox reader) check their vaccination
status with an OTP, download a certificate, change their e-mail and file a report, again and
again, each retrying a turn that failed after a pause, as people do. Meanwhile the schedule
kills -9 the action server, then Rasa, stops PostgreSQL for 10 s, then (WORKERS=2) kills Redis;
a fault waits until answers are normal again after the previous one.

For each fault: turns answered normally, apologies, turns refused (nothing listening: Rasa
itself was down), turns with no answer at all (of which those in flight when it struck), and
seconds until answers were normal again. Afterwards the database is checked: every change a
citizen saw confirmed is there, with its audit row; every ticket a citizen was given exists
and none was created twice; no OTP was consumed after it expired; every change of personal data
in the citizens table has its audit row. Writes results/chaos.json and results/chaos.png.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

from tools.bench import OutboxReader, own_database
from tools.stack import ROOT, Stack, log

CHAOS_DIR = ROOT / "var" / "chaos"
RESULTS = ROOT / "results"
PORTS = {"rasa": 5305, "actions": 5355, "redis": 6395}
ACCOUNTS = 3000
POSTGRES_DOWN_S = 10.0
RETRY_PAUSE_S, GIVE_UP_S = 2.0, 90.0  # a citizen tries a failed turn again, for a while
CALM_S = 3.0  # answers normal for this long: the fault is over, the next may come
SLOW_S = 5.0  # an answer that took longer is not normal yet (Rasa's first turns after a start)


# --- the schedule --------------------------------------------------------------------------------


@dataclass
class Fault:
    name: str  # kill_actions, kill_rasa, stop_postgres, kill_redis
    at: float  # seconds after the start, as planned; the run may delay it (see above)
    hold: float = 0.0  # how long the part stays down before it is started again (PostgreSQL)


def schedule(seconds: float, workers: int) -> list[Fault]:
    """The faults, evenly spread over the run after a calm first stretch; Redis only exists
    (as the lock store) with more than one Rasa worker."""
    names = ["kill_actions", "kill_rasa", "stop_postgres"] + (["kill_redis"] if workers > 1 else [])
    step = seconds / (len(names) + 1)
    return [Fault(name, round(step * (i + 1), 1), POSTGRES_DOWN_S if name == "stop_postgres" else 0.0)
            for i, name in enumerate(names)]


# --- turns and their accounting ------------------------------------------------------------------


@dataclass
class Turn:
    start: float  # seconds after the run started
    end: float
    outcome: str  # ok, apology, refused (nothing listening), none (accepted, no answer)
    why: str = ""  # for none: the HTTP status, "empty", or the client's exception

    @property
    def normal(self) -> bool:
        return self.outcome == "ok" and self.end - self.start <= SLOW_S


def classify(status: int | None, texts: list[str]) -> str:
    if status is None:
        return "refused"
    joined = "\n".join(texts)
    if status != 200 or not joined:
        return "none"
    return "apology" if "gangguan" in joined else "ok"


def account(turns: list[Turn], faults: list[dict], end: float) -> list[dict]:
    """Per fault (and the calm stretch before the first): turns by outcome, counted by when they
    ended, between this fault and the next (slow: answered, after more than SLOW_S); and the
    seconds from the fault until the last turn that was not normal ended (0 when all were)."""
    marks = [{"name": "before_faults", "at": 0.0}] + faults
    rows = []
    for i, mark in enumerate(marks):
        until = marks[i + 1]["at"] if i + 1 < len(marks) else end
        window = [t for t in turns if mark["at"] <= t.end < until]
        bad = [t for t in window if not t.normal]
        row = {"fault": mark["name"], "at_s": round(mark["at"], 1), "turns": len(window)}
        for outcome in ("ok", "apology", "refused", "none"):
            row[outcome] = sum(t.outcome == outcome for t in window)
        row["slow"] = sum(t.outcome == "ok" and not t.normal for t in window)
        row["none_in_flight"] = sum(t.outcome == "none" and t.start < mark["at"] for t in window)
        row["none_why"] = dict(Counter(t.why for t in window if t.outcome == "none" and t.start >= mark["at"]))
        row["recovery_s"] = round(max(t.end for t in bad) - mark["at"], 1) if bad and i else 0.0
        rows.append(row)
    return rows


# --- what the citizens saw, and the database -----------------------------------------------------


@dataclass
class Seen:
    changes: list[dict] = field(default_factory=list)  # {"conversation", "phone", "email"} confirmed
    tickets: list[dict] = field(default_factory=list)  # {"conversation", "reference"} given
    flows: dict = field(default_factory=lambda: {"done": 0, "abandoned": 0})


def check_consistency(db, seen: Seen) -> dict:
    """From the database: what the citizens were told happened, happened once, and is audited."""

    def fn(cur):
        problems: dict[str, list] = {"lost_changes": [], "unaudited_changes": [], "lost_tickets": [],
                                     "doubled_tickets": [], "otp_used_after_expiry": [],
                                     "changes_without_audit_row": []}
        for change in seen.changes:
            cur.execute("SELECT c.id, c.email FROM citizens c JOIN accounts a ON a.id = c.account_id"
                        " WHERE a.phone = %s", (change["phone"],))
            citizen = cur.fetchone()
            cur.execute("SELECT at FROM audit_log WHERE conversation_id = %s AND action = 'change_email'"
                        " AND detail->>'new' = %s", (change["conversation"], change["email"]))
            audited = cur.fetchone()
            if audited is None:
                problems["unaudited_changes"].append(change["conversation"])
            # Lost: not the e-mail now, and no later change of that citizen replaced it.
            later = False
            if citizen is not None and audited is not None:
                cur.execute("SELECT 1 FROM audit_log WHERE citizen_id = %s AND action = 'change_email'"
                            " AND at > %s", (citizen["id"], audited["at"]))
                later = cur.fetchone() is not None
            if citizen is None or (citizen["email"] != change["email"] and not later):
                problems["lost_changes"].append(change["conversation"])
        for ticket in seen.tickets:
            cur.execute("SELECT 1 FROM tickets WHERE reference = %s AND conversation_id = %s",
                        (ticket["reference"], ticket["conversation"]))
            if cur.fetchone() is None:
                problems["lost_tickets"].append(ticket["reference"])
        cur.execute("SELECT conversation_id, category, description, count(*) AS n FROM tickets"
                    " GROUP BY 1, 2, 3 HAVING count(*) > 1")
        problems["doubled_tickets"] = [row["conversation_id"] for row in cur.fetchall()]
        cur.execute("SELECT id FROM otp_challenges WHERE consumed_at > expires_at")
        problems["otp_used_after_expiry"] = [row["id"] for row in cur.fetchall()]
        # Every change of a citizen bumps its version in the same transaction as its audit row.
        cur.execute("SELECT c.id FROM citizens c WHERE c.version - 1 <> (SELECT count(*) FROM audit_log l"
                    " WHERE l.citizen_id = c.id AND l.action IN ('change_email', 'change_name'))")
        problems["changes_without_audit_row"] = [row["id"] for row in cur.fetchall()]
        return problems

    problems = db.run(fn)
    return {"checked": {"confirmed_changes": len(seen.changes), "tickets_given": len(seen.tickets)},
            "problems": {name: len(found) for name, found in problems.items()},
            "examples": {name: found[:5] for name, found in problems.items() if found},
            "consistent": not any(problems.values())}


# --- the citizens --------------------------------------------------------------------------------


class Citizens:
    def __init__(self, url: str, outbox: OutboxReader, phones: asyncio.Queue, started: float):
        self.url, self.outbox, self.phones, self.started = url, outbox, phones, started
        self.turns: list[Turn] = []
        self.seen = Seen()
        self.last_bad = 0.0  # when the last turn that was not answered normally ended
        self.in_flight: dict[int, float] = {}  # turns under way: their start
        self.retrying = 0  # citizens whose last turn failed, not yet answered normally
        self.numbers = itertools.count()

    def calm(self) -> bool:
        """Answers normal for CALM_S, no turn hanging, and no citizen still trying again (a fault
        must not strike while the last one still holds some conversations back)."""
        now = self.now()
        return (now - self.last_bad >= CALM_S and not self.retrying
                and all(now - s <= SLOW_S for s in self.in_flight.values()))

    def now(self) -> float:
        return time.monotonic() - self.started

    async def turn(self, session: aiohttp.ClientSession, sender: str, text: str) -> tuple[str, str]:
        start = self.now()
        key = next(self.numbers)
        self.in_flight[key] = start
        status, texts, why = None, [], ""
        try:
            async with session.post(self.url, json={"sender": sender, "message": text}) as reply:
                status = reply.status
                if status == 200:
                    texts = [m.get("text", "") for m in await reply.json()]
                why = f"http {status}" if status != 200 else "" if texts else "empty"
        except aiohttp.ClientConnectorError:
            status = None  # refused: nothing listening
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
            status, why = 0, type(error).__name__  # accepted (or cut off) without an answer
        del self.in_flight[key]
        turn = Turn(start, self.now(), classify(status, texts), why)
        self.turns.append(turn)
        if not turn.normal:
            self.last_bad = turn.end
        outcome = turn.outcome
        return outcome, "\n".join(texts)

    async def say(self, session, sender: str, text: str) -> str | None:
        """The answer, trying again after a failed turn as a citizen would; None: gave up."""
        given_up = time.monotonic() + GIVE_UP_S
        failed = False
        try:
            while True:
                outcome, reply = await self.turn(session, sender, text)
                if outcome == "ok":
                    return reply
                if time.monotonic() > given_up:
                    return None
                if not failed:
                    failed = True
                    self.retrying += 1
                await asyncio.sleep(RETRY_PAUSE_S)
        finally:
            self.retrying -= failed

    async def code(self, phone: str) -> str | None:
        for _ in range(100):  # delivered from a queue just after the reply
            code = self.outbox.code_for(phone)
            if code:
                return code
            await asyncio.sleep(0.05)
        return None

    async def flow(self, session, phone: str) -> bool:
        sender = f"chaos-{uuid.uuid4().hex[:12]}"
        say = lambda text: self.say(session, sender, text)  # noqa: E731
        if await say("halo") is None or await say("cek status vaksin saya") is None:
            return False
        if await say("0" + phone[3:]) is None:
            return False
        code = await self.code(phone)
        reply = await say(code) if code else None
        if not reply or "Status vaksinasi" not in reply:
            return False
        reply = await say("download sertifikat")
        reply = reply and await say("2")
        link = reply and re.search(r"https?://\S+\.pdf", reply)
        if not link:
            return False
        try:
            async with session.get(link.group(0)) as pdf:
                if pdf.status != 200 or not (await pdf.read()).startswith(b"%PDF"):
                    return False
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False
        email = f"warga{random.randint(1, 10**9)}@example.com"
        if await say("mau ganti email") is None or await say(email) is None:
            return False
        reply = await say("ya")
        if not reply or "Email berhasil diubah" not in reply:
            return False
        self.seen.changes.append({"conversation": sender, "phone": phone, "email": email})
        for text in ("mau lapor", "masalah lainnya", "dosis kedua saya di puskesmas belum tercatat sejak bulan lalu"):
            if await say(text) is None:
                return False
        reply = await say("ya")
        reference = reply and re.search(r"PL-\d{4}-\d{6}", reply)
        if not reference:
            return False
        self.seen.tickets.append({"conversation": sender, "reference": reference.group(0)})
        await say("selesai")
        return True

    async def citizen(self, session, stop: asyncio.Event) -> None:
        while not stop.is_set():
            phone = await self.phones.get()
            done = await self.flow(session, phone)
            self.seen.flows["done" if done else "abandoned"] += 1


# --- the faults ----------------------------------------------------------------------------------


class Faults:
    def __init__(self, stack: Stack, pgdata: Path):
        self.stack, self.pgdata = stack, pgdata

    def pid(self, name: str) -> int:
        return self.stack.watched[name].pid

    async def inflict(self, fault: Fault) -> None:
        if fault.name == "stop_postgres":
            # Taken off the supervisor's list while it is stopped on purpose, then back on it.
            from backend import embedded

            watched = self.stack.watched.pop("postgres", None)
            await asyncio.to_thread(embedded.stop, self.pgdata)
            await asyncio.sleep(fault.hold)
            await asyncio.to_thread(embedded.restart, self.pgdata)
            if watched is not None:
                self.stack.watch_postgres(self.pgdata)
            return
        name = {"kill_actions": "actions", "kill_rasa": "rasa", "kill_redis": "redis"}[fault.name]
        # The whole process group: Rasa's Sanic workers die with it, as on a crash of the machine's
        # OOM killer's choice, and turns in flight inside it end there.
        os.killpg(self.pid(name), signal.SIGKILL)

    def back(self) -> bool:
        """Every supervised process is running and ready again."""
        return all(w.restart_at is None and not w.waiting_ready for w in self.stack.watched.values())


async def run(stack: Stack, pgdata: Path, url: str, outbox: OutboxReader, phones: asyncio.Queue,
              users: int, plan: list[Fault], seconds: float) -> tuple[Citizens, list[dict], float]:
    started = time.monotonic()
    citizens = Citizens(url, outbox, phones, started)
    faults = Faults(stack, pgdata)
    stop = asyncio.Event()
    done: list[dict] = []
    timeout = aiohttp.ClientTimeout(total=60, connect=5)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=users * 2)) as session:
        tasks = [asyncio.create_task(citizens.citizen(session, stop)) for _ in range(users)]
        for fault in plan:
            while citizens.now() < fault.at:
                await asyncio.sleep(0.2)
            # The previous fault is over first: processes back, answers normal for CALM_S.
            while not (faults.back() and citizens.calm()):
                await asyncio.sleep(0.2)
            log(f"chaos: {fault.name} at {citizens.now():.1f} s")
            done.append({"name": fault.name, "at": citizens.now(), "planned_at": fault.at})
            await faults.inflict(fault)
        while citizens.now() < seconds or not (faults.back() and citizens.calm()):
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*tasks)
    return citizens, done, citizens.now()


# --- report --------------------------------------------------------------------------------------


def plot(turns: list[Turn], faults: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max((t.end for t in turns), default=1.0)
    bins = [i for i in range(int(end) + 2)]
    fig, ax = plt.subplots(figsize=(10, 4))
    colours = {"ok": "tab:green", "apology": "tab:orange", "refused": "tab:grey", "none": "tab:red"}
    bottom = [0] * (len(bins) - 1)
    for outcome, colour in colours.items():
        counts = [0] * (len(bins) - 1)
        for t in turns:
            if t.outcome == outcome:
                counts[min(int(t.end), len(counts) - 1)] += 1
        ax.bar(bins[:-1], counts, width=1.0, bottom=bottom, color=colour, label=outcome, align="edge")
        bottom = [b + c for b, c in zip(bottom, counts)]
    for fault in faults:
        ax.axvline(fault["at"], color="black", linestyle="--", linewidth=0.8)
        ax.text(fault["at"], max(bottom or [1]) * 0.95, " " + fault["name"], fontsize=8, rotation=90, va="top")
    ax.set(xlabel="seconds", ylabel="turns ended per second", title="Turns under faults (make chaos)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def print_table(rows: list[dict], consistency: dict) -> None:
    head = (f"{'fault':16}{'turns':>7}{'ok':>7}{'slow':>6}{'apology':>9}{'refused':>9}{'none':>6}{'in flight':>11}"
            f"{'recovery s':>12}")
    print("\n" + head)
    for r in rows:
        print(f"{r['fault']:16}{r['turns']:>7}{r['ok']:>7}{r['slow']:>6}{r['apology']:>9}{r['refused']:>9}{r['none']:>6}"
              f"{r['none_in_flight']:>11}{r['recovery_s']:>12}")
    for r in rows:
        if r["none_why"]:
            print(f"{r['fault']}: unanswered after it struck, by cause: {r['none_why']}")
    print(f"\nconsistency: {consistency['checked']} problems {consistency['problems']}"
          f" -> {'consistent' if consistency['consistent'] else 'NOT CONSISTENT'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=240, help="planned length (faults spread over it)")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS") or 2))
    args = parser.parse_args(argv)
    if args.seconds < 30 or args.users < 1:
        parser.error("--seconds must be at least 30 and --users at least 1")

    from backend import embedded

    own = own_database(CHAOS_DIR, ACCOUNTS)
    url, env, backend, phones, outbox, pgdata = own.url, own.env, own.backend, own.phones, own.outbox, own.pgdata

    stack = Stack(url, rasa_port=PORTS["rasa"], action_port=PORTS["actions"], log_dir=CHAOS_DIR / "log",
                  extra_env=env, workers=args.workers, redis_port=PORTS["redis"])
    plan = schedule(args.seconds, args.workers)
    supervisor = None
    try:
        log(f"chaos: starting a stack of its own in {CHAOS_DIR} (WORKERS={args.workers}) ...")
        stack.watch_postgres(pgdata)
        stack.start_actions()
        stack.start_rasa()
        supervisor = stack.start_supervisor()
        log(f"chaos: {args.users} citizens for {args.seconds:.0f} s; faults planned at "
            + ", ".join(f"{f.name} {f.at:.0f} s" for f in plan))
        citizens, done, end = asyncio.run(run(stack, pgdata, f"http://127.0.0.1:{PORTS['rasa']}/webhooks/rest/webhook",
                                              outbox, phones, args.users, plan, args.seconds))
    finally:
        if supervisor is not None:
            supervisor.set()
        stack.stop()
    # The stack is stopped, PostgreSQL kept: the checks read what was left behind.
    if embedded.postmaster(pgdata) is None:
        embedded.restart(pgdata)
    consistency = check_consistency(backend.db, citizens.seen)
    backend.db.close()
    rows = account(citizens.turns, done, end)
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": round(end, 1),
              "planned_seconds": args.seconds, "users": args.users, "workers": args.workers,
              "machine_cpus": os.cpu_count(), "faults": rows, "flows": citizens.seen.flows,
              "consistency": consistency, "plan": [asdict(f) for f in plan]}
    (RESULTS / "chaos.json").write_text(json.dumps(report, indent=2))
    plot(citizens.turns, done, RESULTS / "chaos.png")
    print_table(rows, consistency)
    print(f"flows: {citizens.seen.flows}; written: {RESULTS / 'chaos.json'}, {RESULTS / 'chaos.png'}")
    return 0 if consistency["consistent"] else 1


if __name__ == "__main__":
    sys.exit(main())
