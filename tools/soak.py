"""The soak (`make soak`): does memory level off over hours of load?

    python -m tools.soak                      # 16 citizens for an hour, a sample every 30 s
    python -m tools.soak --seconds 300 --every 10

A mode of the benchmark (tools/bench.py's citizens, texts new while there are: SoakTexts), not a test. It
starts a stack of its own on other ports with its own embedded PostgreSQL under var/soak (wiped
at each run, so a developer's data is never touched), then drives the real flows (status with
an OTP, download, change of e-mail) with always-new conversations. Every --every seconds it
samples each process's memory (PSS: Rasa, the action server, PostgreSQL, each with its
children), the database's size, and the turns, errors and p99 of the interval.

Memory has levelled off when it grows no more in the second half of the run: the report gives
each process's growth over the second half (least-squares slope, MB per hour) beside its size.
Writes results/soak.json and results/soak.png; docs/performance.md holds the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import psutil

from tools.bench import RESULTS, MixTexts, NewTexts, OutboxReader, Sample, drive, own_database, percentile
from tools.stack import ROOT, Stack, log

SOAK_DIR = ROOT / "var" / "soak"
PORTS = {"rasa": 5405, "actions": 5455}
ACCOUNTS = 6000
PROCESSES = ("rasa", "actions", "postgres")


class SoakTexts:
    """Texts never sent before, with at most one typo (NewTexts piles typos on once a step's
    simpler variants are used: after some minutes most flows went off track), while a step has
    any left; then the step's usual text. The NLU cache fills up with distinct texts first,
    which is what its bound must survive."""

    kind = "new"
    TRIES = 50

    def __init__(self, seed: int | None = None):
        self.new, self.mix, self.used_up = NewTexts(seed), MixTexts(), set()

    def __call__(self, step: str) -> str:
        if step not in self.used_up:
            for _ in range(self.TRIES):
                text = self.new._variant(step, typos=self.new.random.random() < 0.5, more=0)
                if text not in self.new.seen:
                    self.new.seen.add(text)
                    return text
            self.used_up.add(step)
        return self.mix(step)


def tree_memory_mb(process: psutil.Process | None) -> float | None:
    """Memory of a process and its children (Sanic workers, PostgreSQL backends), or None when it
    is not running: proportional set size (PSS), so that memory they share (PostgreSQL's shared
    buffers, pages of a fork) is counted once, not once per process as RSS would."""
    if process is None:
        return None
    total = 0
    try:
        members = [process] + process.children(recursive=True)
    except psutil.Error:
        return None
    for member in members:
        try:
            total += member.memory_full_info().pss
        except psutil.Error:  # a backend that ended meanwhile
            pass
    return round(total / 2**20, 1)


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour; None with fewer than 3."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return None
    return round(sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 3600, 1)


def summary(samples: list[dict]) -> dict:
    """Per process (and the database): first, last and largest size, and growth in the second
    half of the run in MB per hour; turns, errors and the worst interval's p99 overall."""
    out: dict = {"processes": {}, "turns": sum(s["turns"] for s in samples),
                 "errors": sum(s["errors"] for s in samples)}
    if not samples:
        return out
    half = samples[-1]["t_s"] / 2
    for name in (*PROCESSES, "database"):
        key = "database_mb" if name == "database" else name
        series = [(s["t_s"], s["memory_mb"][key] if name != "database" else s[key]) for s in samples]
        series = [(t, v) for t, v in series if v is not None]
        if not series:
            continue
        out["processes"][name] = {
            "first_mb": series[0][1], "last_mb": series[-1][1], "max_mb": max(v for _, v in series),
            "second_half_mb_per_h": slope_per_hour([(t, v) for t, v in series if t >= half])}
    p99s = [s["p99_ms"] for s in samples if s["p99_ms"] is not None]
    out["worst_p99_ms"] = max(p99s) if p99s else None
    out["turns_per_s"] = round(out["turns"] / samples[-1]["t_s"], 1) if samples[-1]["t_s"] else None
    return out


class Sampler:
    """Reads memory and the database's size; its clock starts with the load."""

    def __init__(self, stack: Stack, pgdata: Path, db):
        self.stack, self.pgdata, self.db = stack, pgdata, db
        self.started = time.monotonic()

    def process(self, name: str) -> psutil.Process | None:
        from backend import embedded

        if name == "postgres":
            return embedded.postmaster(self.pgdata)
        watched = self.stack.watched.get(name)
        try:
            return psutil.Process(watched.pid) if watched is not None else None
        except psutil.Error:
            return None

    def database_mb(self) -> float:
        def read(cur) -> int:
            cur.execute("SELECT pg_database_size(current_database()) AS size")
            return cur.fetchone()["size"]

        size = self.db.run(read)
        return round(size / 2**20, 1)

    def sample(self, interval: Sample) -> dict:
        latencies = interval.latencies
        return {"t_s": round(time.monotonic() - self.started, 1),
                "memory_mb": {name: tree_memory_mb(self.process(name)) for name in PROCESSES},
                "database_mb": self.database_mb(), "turns": len(latencies), "errors": interval.errors,
                "flows": interval.flows,
                "p99_ms": round(percentile(latencies, 99) * 1000, 1) if latencies else None}


async def soak(url: str, sampler: Sampler, outbox: OutboxReader, phones: asyncio.Queue, users: int,
               seconds: float, every: float) -> list[dict]:
    """Load in intervals of `every` seconds, one sample after each; citizens start a new
    conversation for every flow (tools/bench.py's citizen), texts never repeated."""
    texts = SoakTexts()
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end - 1:
        interval = await drive(url, users, min(every, end - time.monotonic()), "ours", outbox, phones, texts)
        samples.append(await asyncio.get_running_loop().run_in_executor(None, sampler.sample, interval))
        last = samples[-1]
        log(f"soak {last['t_s']:.0f} s: " + ", ".join(f"{k} {v} MB" for k, v in last["memory_mb"].items())
            + f", database {last['database_mb']} MB, {last['turns']} turns, {last['errors']} errors")
    return samples


def plot(samples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s["t_s"] / 60 for s in samples]
    figure, (memory, database) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for name in PROCESSES:
        memory.plot(minutes, [s["memory_mb"][name] for s in samples], label=name)
    memory.set_ylabel("memory, PSS (MB)")
    memory.legend()
    memory.set_title("soak: 16 citizens, always-new conversations" if samples else "soak")
    database.plot(minutes, [s["database_mb"] for s in samples], color="gray")
    database.set_ylabel("database size (MB)")
    database.set_xlabel("minutes")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def print_table(result: dict) -> None:
    print(f"{'process':<10} {'first MB':>9} {'last MB':>9} {'max MB':>9} {'2nd half MB/h':>14}")
    for name, row in result["processes"].items():
        print(f"{name:<10} {row['first_mb']:>9} {row['last_mb']:>9} {row['max_mb']:>9} "
              f"{row['second_half_mb_per_h'] if row['second_half_mb_per_h'] is not None else '-':>14}")
    print(f"turns {result['turns']} ({result.get('turns_per_s')}/s), errors {result['errors']}, "
          f"worst interval p99 {result.get('worst_p99_ms')} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3600)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--every", type=float, default=30, help="seconds between samples")
    args = parser.parse_args(argv)
    if args.seconds < 3 * args.every or args.every < 5 or args.users < 1:
        parser.error("--every at least 5 s, --seconds at least three times --every, --users at least 1")

    own = own_database(SOAK_DIR, ACCOUNTS)
    url, env, backend, phones, outbox, pgdata = own.url, own.env, own.backend, own.phones, own.outbox, own.pgdata
    stack = Stack(url, rasa_port=PORTS["rasa"], action_port=PORTS["actions"], log_dir=SOAK_DIR / "log",
                  extra_env=env)
    try:
        log(f"soak: starting a stack of its own in {SOAK_DIR} ...")
        stack.start_actions()
        stack.start_rasa()
        sampler = Sampler(stack, pgdata, backend.db)
        log(f"soak: {args.users} citizens for {args.seconds:.0f} s, a sample every {args.every:.0f} s")
        samples = asyncio.run(soak(f"http://127.0.0.1:{PORTS['rasa']}/webhooks/rest/webhook", sampler, outbox,
                                   phones, args.users, args.seconds, args.every))
    finally:
        stack.stop()
        backend.db.close()  # the embedded PostgreSQL stops when this process exits
    result = summary(samples)
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": args.seconds,
              "users": args.users, "every_s": args.every, "machine_cpus": os.cpu_count(),
              "command": "python -m tools.soak " + " ".join(argv if argv is not None else sys.argv[1:]),
              "summary": result, "samples": samples}
    (RESULTS / "soak.json").write_text(json.dumps(report, indent=2))
    plot(samples, RESULTS / "soak.png")
    print_table(result)
    print(f"written: {RESULTS / 'soak.json'}, {RESULTS / 'soak.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
