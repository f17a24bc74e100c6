"""The dialogue policies' cost per prediction, with and without the AugmentedMemoizationPolicy
(issue 17): two core-only models trained from this project's data (one with config.yml's
policies, one with the RulePolicy alone), every action of the test stories predicted from its
conversation so far, alternately, in rounds; medians and the ratios. Rasa's speed patches are
installed first (rasa_server/patches/), as in every process that serves citizens, and logging
is at INFO as there; "memoization_rasa_copies" is the memoization model with the policy's
debug-only deep copies put back (the patch for them measured).

    python -m tools.policy_bench [--rounds 7] [--out results/policy_bench]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def train(config: dict, out: Path, name: str) -> Path:
    path = out / f"{name}.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "rasa", "train", "core", "-c", str(path), "-d", "domain.yml",
                    "-s", "data", "--out", str(out), "--fixed-model-name", name], cwd=ROOT, check=True,
                   capture_output=True)
    return out / f"{name}.tar.gz"


def prefixes(agent) -> list:
    """Each point of the test stories where the assistant predicts an action: the tracker so far."""
    from rasa.core.test import _create_data_generator
    from rasa.shared.core.events import ActionExecuted
    from rasa.shared.core.trackers import DialogueStateTracker

    generator = _create_data_generator(str(ROOT / "tests/test_stories.yml"), agent)
    trackers = generator.generate_story_trackers()
    points = []
    for tracker in trackers:
        events = list(tracker.events)
        for i, event in enumerate(events):
            if isinstance(event, ActionExecuted) and i > 0:
                points.append(DialogueStateTracker.from_events(tracker.sender_id, events[:i],
                                                               agent.domain.slots))
    return points


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default="results/policy_bench")
    args = parser.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
    rules_only = {**config, "policies": [p for p in config["policies"] if p["name"] == "RulePolicy"]}
    models = {"with_memoization": train(config, out, "with_memoization"),
              "rules_only": train(rules_only, out, "rules_only")}

    import copy
    import logging

    from rasa.utils.log_utils import configure_structlog

    logging.basicConfig(level=logging.INFO)
    configure_structlog(logging.INFO)
    from rasa_server import patches

    patches.install()
    from rasa.core.agent import Agent
    from rasa.core.policies import memoization

    agents = {name: Agent.load(str(path)) for name, path in models.items()}
    agents["memoization_rasa_copies"] = agents["with_memoization"]
    points = prefixes(agents["with_memoization"])
    timings: dict[str, list[float]] = {name: [] for name in agents}
    patched_copy = memoization.copy
    for _ in range(args.rounds):
        for name, agent in agents.items():  # alternately, so that noise falls on all
            memoization.copy = copy if name == "memoization_rasa_copies" else patched_copy
            start = time.perf_counter()
            for tracker in points:
                agent.processor._predict_next_with_tracker(tracker)
            timings[name].append((time.perf_counter() - start) / len(points) * 1000)
    memoization.copy = patched_copy
    result = {name: {"median_ms_per_prediction": round(statistics.median(t), 3),
                     "rounds_ms": [round(x, 3) for x in t]} for name, t in timings.items()}
    result["predictions_per_round"] = len(points)
    for name in ("with_memoization", "memoization_rasa_copies"):
        result[f"ratio_{name}_to_rules_only"] = round(result[name]["median_ms_per_prediction"]
                                                      / result["rules_only"]["median_ms_per_prediction"], 3)
    (out / "policy_bench.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
