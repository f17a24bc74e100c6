"""Capacity (`make capacity`): the most concurrent users this machine holds, ours and stock Rasa.

    python -m tools.capacity                     # 20 s per load, the ladder 4, 8, 16, ... 128
    python -m tools.capacity --duration 10 --most 64

A mode of the benchmark (tools/bench.py's citizens and stock `rasa init` assistant, the realistic
mix of texts), both stacks up in the same run, ours on a stack of its own with its own embedded
PostgreSQL under var/capacity (wiped at each run). A load holds when every turn was answered
(no error, no apology) and the 99th percentile of turn time stayed under one second. Each stack
climbs the ladder until a load does not hold, then the gap between the last load that held and
the first that did not is bisected. What the most users means is given in turns per second and
in conversations per hour (for ours, a citizen's whole visit: status with an OTP, a certificate
downloaded, an e-mail changed). Writes results/capacity.json; docs/performance.md holds the
figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Callable

from tools.bench import RESULTS, MixTexts, drive, own_database, start_ours, start_stock, summarise
from tools.stack import ROOT, log

CAPACITY_DIR = ROOT / "var" / "capacity"
PORTS = {"ours": (5505, 5555), "stock": 5506}
ACCOUNTS = 6000
LADDER = (4, 8, 16, 24, 32, 48, 64, 96, 128)
P99_LIMIT_MS = 1000.0


def holds(summary: dict) -> bool:
    """Every turn answered, and 99% of them within the limit."""
    return summary["turns"] > 0 and summary["errors"] == 0 and summary["p99_ms"] < P99_LIMIT_MS


def search(probe: Callable[[int], dict], ladder: tuple[int, ...], refine: int = 2) -> dict:
    """Climb the ladder with probe(users) -> bench summary until a load does not hold, then
    bisect the gap `refine` times. The most users that held (0: not even the first), its
    summary, and every load tried."""
    tried: dict[int, dict] = {}

    def ok(users: int) -> bool:
        if users not in tried:
            tried[users] = probe(users)
        return holds(tried[users])

    best, failed = 0, None
    for users in ladder:
        if not ok(users):
            failed = users
            break
        best = users
    low = best or 0
    for _ in range(refine):
        if failed is None or failed - low <= 1:
            break
        middle = (low + failed) // 2
        if middle == low:
            break
        if ok(middle):
            low = best = middle
        else:
            failed = middle
    return {"most_users": best, "at": tried.get(best), "first_failing": failed,
            "tried": {str(users): tried[users] for users in sorted(tried)}}


def per_hour(summary: dict | None, seconds: float) -> dict:
    """What a load means: turns per second and whole conversations per hour."""
    if not summary:
        return {"turns_per_s": 0, "conversations_per_hour": 0}
    return {"turns_per_s": summary["turns_per_s"],
            "conversations_per_hour": round(summary["flows_completed"] / seconds * 3600)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20, help="seconds per load")
    parser.add_argument("--most", type=int, default=LADDER[-1], help="the highest load tried")
    parser.add_argument("--targets", default="ours,stock", help="ours, stock or ours,stock")
    args = parser.parse_args(argv)
    targets = list(dict.fromkeys(args.targets.split(",")))
    ladder = tuple(n for n in LADDER if n <= args.most)
    if args.duration < 5 or not ladder or not targets or set(targets) - {"ours", "stock"}:
        parser.error(f"--duration at least 5 s, --most at least {LADDER[0]}, --targets ours, stock or ours,stock")

    own = own_database(CAPACITY_DIR, ACCOUNTS)
    own.backend.db.close()
    url, phones, outbox = own.url, own.phones, own.outbox

    stack = stock = None
    urls: dict[str, str] = {}
    results: dict[str, dict] = {}
    try:
        if "ours" in targets:
            log(f"capacity: starting our stack in {CAPACITY_DIR} ...")
            stack, _ = start_ours(url, PORTS["ours"], CAPACITY_DIR / "log")
            urls["ours"] = f"http://127.0.0.1:{PORTS['ours'][0]}/webhooks/rest/webhook"
        if "stock" in targets:
            stock, _ = start_stock(PORTS["stock"])
            urls["stock"] = f"http://127.0.0.1:{PORTS['stock']}/webhooks/rest/webhook"

        def probe_of(name: str) -> Callable[[int], dict]:
            def probe(users: int) -> dict:
                sample = asyncio.run(drive(urls[name], users, args.duration, name, outbox, phones, MixTexts()))
                summary = summarise([sample])
                summary.pop("rasa_cpu_ms_per_turn")  # not sampled here (a 0 would mislead): make bench has it
                log(f"capacity {name}: {users} users: {summary['turns_per_s']} turns/s, p99 {summary['p99_ms']} ms, "
                    f"{summary['errors']} errors: {'holds' if holds(summary) else 'does not hold'}")
                return summary
            return probe

        for name in targets:
            asyncio.run(drive(urls[name], 2, 5, name, outbox, phones, MixTexts()))  # warm-up, not counted
            found = search(probe_of(name), ladder)
            found.update(per_hour(found["at"], args.duration))
            results[name] = found
    finally:
        if stack is not None:
            stack.stop()
        if stock is not None:
            os.killpg(stock.pid, 15)
            stock.wait(timeout=20)
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine_cpus": os.cpu_count(),
              "duration_s": args.duration, "p99_limit_ms": P99_LIMIT_MS,
              "command": "python -m tools.capacity " + " ".join(argv if argv is not None else sys.argv[1:]),
              "results": results}
    (RESULTS / "capacity.json").write_text(json.dumps(report, indent=2))
    for name, found in results.items():
        # Stock's conversations are rasa init's 3-4 turn chats: compare the stacks by turns/s.
        visits = "citizens' visits" if name == "ours" else "rasa init chats"
        print(f"{name:<6} most users {found['most_users']:>4} (first failing: {found['first_failing']}), "
              f"{found['turns_per_s']} turns/s, {found['conversations_per_hour']} {visits}/hour")
    print(f"written: {RESULTS / 'capacity.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
