"""Measures the NLU: the held-out test sets, a seeded 5-fold cross-validation, and the thresholds.

    python -m tools.nlu_report                      # what `make nlu-report` runs
    python -m tools.nlu_report --heldout-only       # both held-out files, no CV (a minute or two)
    python -m tools.nlu_report --config /tmp/x.yml --train /tmp/nluexp/x --out /tmp/nluexp/x/results
                                                    # an experiment: train a scratch model first

Two held-out files: tests/nlu/test_nlu.yml (written with the training data) and
tests/nlu/test_nlu_independent.yml (written by someone who never read data/nlu, issue 20; each
example names its family in metadata, reported per family). Neither may share a line with training.

Writes under --out (default results/nlu/):
  heldout/    what `rasa test nlu` writes for tests/nlu/test_nlu.yml (reports, errors, plots)
  independent/ the same for tests/nlu/test_nlu_independent.yml; predictions-independent.json
  cv/         the same reports for the out-of-fold predictions of the cross-validation
  summary.json, predictions-heldout.json, predictions-cv.json, thresholds.json
Entity figures: Rasa's report per extractor (DIETClassifier_report.json, ...), and the goals on
all_extractors_report.json, every extractor's entities together (what the assistant gets).

Figures are computed over the true intents only: a message the FallbackClassifier turns into
nlu_fallback counts as a miss of its intent, and nlu_fallback is not a class of its own (scikit's
report would add it with F1 0 and lower the macro average of every model alike).
Rasa's own `--cross-validation` shuffles its folds without a seed, so its figures change from
run to run; here the folds are drawn from a fixed seed, the rest is Rasa's evaluation code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")  # nothing leaves this machine
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
RASA = Path(sys.executable).parent / "rasa"
FALLBACK = "nlu_fallback"
OUT_OF_SCOPE = "out_of_scope"
# The goals on the held-out file (issue 3, docs/nlu.md).
GOAL_INTENT = 0.95  # intent accuracy and macro F1
GOAL_ENTITY = 0.95  # F1 of each of KEY_ENTITIES
GOAL_OUT_OF_SCOPE = 0.90  # out-of-scope messages to out_of_scope or the fallback
GOAL_INDEPENDENT_INTENT = 0.93  # intent accuracy and macro F1 on the independent file (issue 20)
# The families of the independent file (metadata.family of each example, issue 20).
FAMILIES = ("plain", "slang_typo", "regional", "complaint_story", "near_domain_oos", "long_polite",
            "cost", "data_plus_intent", "short_menu_answer", "english", "code_mixed")
KEY_ENTITIES = ("nik", "phone_number", "otp_code", "dose")
# The entities the assistant gets, whichever component found them (DIET, or the digit patterns
# for nik, phone_number and otp_code): Rasa reports each extractor against every entity type,
# so an extractor's own report counts the types another one finds as missed.
ALL_EXTRACTORS = "all_extractors"
# Threshold grid searched on the out-of-fold predictions.
FALLBACK_GRID = [round(0.05 * i, 2) for i in range(0, 19)]
AMBIGUITY_GRID = [0.0, 0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3]


# --- data ---------------------------------------------------------------------------------------

def load_nlu(path: Path):
    from rasa.shared.nlu.training_data.loading import load_data

    return load_data(str(path))


def normalised(text: str) -> str:
    """What makes two utterances "the same" for the independence check."""
    return re.sub(r"\s+", " ", text.strip().lower()).strip(" ?!.,")


def check_independent(train, test) -> list[str]:
    """Held-out lines that also occur in the training data (case, spacing, end punctuation aside)."""
    seen = {normalised(m.get("text")) for m in train.nlu_examples}
    return [m.get("text") for m in test.nlu_examples if normalised(m.get("text")) in seen]


def family_of(message) -> str | None:
    """The family an example of the independent file names (Rasa keeps example metadata there)."""
    metadata = message.get("metadata") or {}
    return (metadata.get("example") or {}).get("family")


# --- predictions --------------------------------------------------------------------------------

async def predict(processor, data) -> list[dict]:
    """One record per example: target, the final intent, the classifier's raw ranking, entities."""
    from rasa.core.channels import UserMessage

    records = []
    for example in data.intent_examples:
        parsed = await processor.parse_message(UserMessage(text=example.get("text")))
        ranking = [(r["name"], float(r["confidence"])) for r in parsed.get("intent_ranking") or []
                   if r["name"] != FALLBACK]  # what the classifiers said, before the fallback
        selector = (parsed.get("response_selector") or {}).get("faq", {}).get("response", {})
        records.append({
            "text": example.get("text"),
            "target": example.get("intent"),
            "target_response": example.get_full_intent() if example.get("intent") == "faq" else None,
            "family": family_of(example),
            "predicted": parsed["intent"]["name"],
            "ranking": ranking[:5],
            "predicted_response": selector.get("intent_response_key"),
            "entities_target": [{k: e.get(k) for k in ("entity", "value", "start", "end")}
                                for e in example.get("entities") or []],
            "entities_predicted": [{k: e.get(k) for k in ("entity", "value", "start", "end", "extractor")}
                                   for e in parsed.get("entities") or []],
        })
    return records


def decide(record: dict, threshold: float, ambiguity: float) -> str:
    """The intent the FallbackClassifier would let through with these thresholds."""
    ranking = record["ranking"]
    if not ranking:
        return FALLBACK
    top = ranking[0][1]
    second = ranking[1][1] if len(ranking) > 1 else 0.0
    if top < threshold or top - second < ambiguity:
        return FALLBACK
    return ranking[0][0]


# --- figures ------------------------------------------------------------------------------------

def intent_figures(records: list[dict], predicted_key: str = "predicted") -> dict:
    from sklearn.metrics import f1_score

    targets = [r["target"] for r in records]
    predicted = [r[predicted_key] for r in records]
    labels = sorted(set(targets))
    correct = sum(t == p for t, p in zip(targets, predicted))
    oos = [r for r in records if r["target"] == OUT_OF_SCOPE]
    top_right = sum(bool(r["ranking"]) and r["ranking"][0][0] == r["target"] for r in records)
    return {
        "examples": len(records),
        "accuracy": round(correct / len(records), 4),
        "top_intent_accuracy": round(top_right / len(records), 4),  # the classifier, before the fallback
        "macro_f1": round(float(f1_score(targets, predicted, labels=labels, average="macro",
                                         zero_division=0)), 4),
        "fallbacks": sum(p == FALLBACK for p in predicted),
        "out_of_scope_examples": len(oos),
        "out_of_scope_routed": round(sum(r[predicted_key] in (OUT_OF_SCOPE, FALLBACK) for r in oos)
                                     / len(oos), 4) if oos else None,
    }


def response_figures(records: list[dict]) -> dict:
    faq = [r for r in records if r["target_response"]]
    if not faq:
        return {}
    right = sum(r["predicted"] == "faq" and r["predicted_response"] == r["target_response"] for r in faq)
    topic = sum(r["predicted_response"] == r["target_response"] for r in faq)
    return {"faq_examples": len(faq),
            "faq_answered_right": round(right / len(faq), 4),  # intent faq and the right topic
            "faq_topic_accuracy": round(topic / len(faq), 4)}  # topic, whatever the intent


def dose_values(records: list[dict]) -> dict:
    """Whether the value that reaches the dose slot is 1/2/3 (synonyms applied), per annotated dose."""
    total = right = 0
    for r in records:
        for target in (e for e in r["entities_target"] if e["entity"] == "dose"):
            total += 1
            right += any(p["entity"] == "dose" and p["value"] == target["value"]
                         and p["start"] < target["end"] and target["start"] < p["end"]
                         for p in r["entities_predicted"])
    return {"dose_mentions": total, "dose_value_accuracy": round(right / total, 4) if total else None}


def entity_figures(report_dir: Path) -> dict:
    """Rasa's token-level entity reports, one per extractor."""
    figures = {}
    for report in sorted(report_dir.glob("*_report.json")):
        if report.name.split("_report")[0] in ("intent", "response_selection"):
            continue
        data = json.loads(report.read_text())
        extractor = report.name.removesuffix("_report.json")
        figures[extractor] = {
            "micro_f1": round(data.get("micro avg", {}).get("f1-score", 0.0), 4),
            "macro_f1": round(data["macro avg"]["f1-score"], 4),
            "per_entity": {name: {"f1": round(v["f1-score"], 4), "support": v["support"]}
                           for name, v in data.items()
                           if isinstance(v, dict) and "support" in v and not name.endswith(" avg")},
        }
    return figures


def combined_entity_report(entity_results: list, report_dir: Path) -> None:
    """Rasa's entity report and errors over all extractors together: all_extractors_report.json."""
    from rasa.nlu import test as nlu_test

    merged = [result._replace(entity_predictions=[{**p, "extractor": ALL_EXTRACTORS}
                                                  for p in result.entity_predictions])
              for result in entity_results]
    os.makedirs(report_dir, exist_ok=True)
    nlu_test.evaluate_entities(merged, {ALL_EXTRACTORS}, str(report_dir), False, True, True, report_as_dict=True)


def errors_of(records: list[dict]) -> list[dict]:
    return [{"text": r["text"], "target": r["target"], "predicted": r["predicted"],
             "top": r["ranking"][:2], **({"family": r["family"]} if r.get("family") else {})}
            for r in records if r["predicted"] != r["target"]]


def answered_right(record: dict) -> bool:
    """The intent, and for a faq question also the topic the answer is chosen by."""
    return record["predicted"] == record["target"] and (
        not record.get("target_response") or record.get("predicted_response") == record["target_response"])


def family_figures(records: list[dict]) -> dict:
    """Per family: intent accuracy (the file's convention), and answered right (FAQ topic too)."""
    table: dict = {}
    for r in records:
        row = table.setdefault(r.get("family") or "-", {"examples": 0, "right": 0, "answered_right": 0})
        row["examples"] += 1
        row["right"] += r["predicted"] == r["target"]
        row["answered_right"] += answered_right(r)
    return {family: {"examples": row["examples"], "accuracy": round(row["right"] / row["examples"], 4),
                     "answered_right": round(row["answered_right"] / row["examples"], 4)}
            for family, row in sorted(table.items(), key=lambda item: -item[1]["examples"])}


def per_intent_figures(records: list[dict]) -> dict:
    """Per true intent: precision, recall, F1 (same conventions as intent_figures); per FAQ topic:
    how many reach faq with that topic."""
    from sklearn.metrics import precision_recall_fscore_support

    targets = [r["target"] for r in records]
    predicted = [r["predicted"] for r in records]
    labels = sorted(set(targets))
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predicted, labels=labels, zero_division=0)
    intents = {label: {"examples": int(n), "precision": round(float(p), 4), "recall": round(float(r), 4),
                       "f1": round(float(f), 4)}
               for label, p, r, f, n in zip(labels, precision, recall, f1, support)}
    topics: dict = {}
    for r in records:
        if r.get("target_response"):
            row = topics.setdefault(r["target_response"], {"examples": 0, "right": 0})
            row["examples"] += 1
            row["right"] += answered_right(r)
    return {"intents": intents,
            "faq_topics": {topic: {"examples": row["examples"],
                                   "answered_right": round(row["right"] / row["examples"], 4)}
                           for topic, row in sorted(topics.items())}}


# --- thresholds ---------------------------------------------------------------------------------

def threshold_costs(records: list[dict]) -> list[dict]:
    """For each pair of thresholds: messages misrouted, and messages sent to the fallback needlessly.

    A message is handled well when it reaches its intent, or when the classifier's top guess is
    wrong and the fallback asks instead (for out_of_scope, the fallback is as good as the intent).
    Both kinds of mistake count one: a misrouted message starts the wrong flow, a needless
    fallback costs the citizen a tap on "Maksud Anda ...?".
    """
    table = []
    for threshold in FALLBACK_GRID:
        for ambiguity in AMBIGUITY_GRID:
            misrouted = needless = 0
            for r in records:
                decided = decide(r, threshold, ambiguity)
                top = r["ranking"][0][0] if r["ranking"] else None
                if decided == FALLBACK:
                    needless += top == r["target"] and r["target"] != OUT_OF_SCOPE
                elif decided != r["target"]:
                    misrouted += 1
            table.append({"threshold": threshold, "ambiguity_threshold": ambiguity,
                          "misrouted": misrouted, "needless_fallbacks": needless,
                          "cost": misrouted + needless})
    return table


def choose_thresholds(table: list[dict]) -> dict:
    """The cheapest pair; among equals, the one that interrupts least (lowest thresholds)."""
    return min(table, key=lambda row: (row["cost"], row["needless_fallbacks"], row["threshold"],
                                       row["ambiguity_threshold"]))


def confidence_summary(records: list[dict]) -> dict:
    import numpy as np

    def quantiles(values):
        return {q: round(float(np.quantile(values, q / 100)), 3) for q in (1, 5, 10, 25, 50)} if values else {}

    right = [r["ranking"][0][1] for r in records if r["ranking"] and r["ranking"][0][0] == r["target"]
             and r["target"] != OUT_OF_SCOPE]
    wrong = [r["ranking"][0][1] for r in records if r["ranking"] and r["ranking"][0][0] != r["target"]]
    gap_right = [r["ranking"][0][1] - (r["ranking"][1][1] if len(r["ranking"]) > 1 else 0)
                 for r in records if r["ranking"] and r["ranking"][0][0] == r["target"]]
    return {"top_confidence_when_right": quantiles(right),
            "top_confidence_when_wrong": sorted(round(v, 3) for v in wrong),
            "top_two_gap_when_right": quantiles(gap_right)}


# --- runs ---------------------------------------------------------------------------------------

def train(config: Path, data: Path, out: Path, name: str) -> Path:
    from rasa.model_training import train_nlu

    started = time.monotonic()
    model = train_nlu(str(config), str(data), str(out), fixed_model_name=name)
    print(f"trained {name} in {time.monotonic() - started:.0f} s", flush=True)
    return Path(model)


async def held_out(model: Path, test_files: dict[str, Path], out: Path) -> dict[str, list[dict]]:
    """Each held-out file against the model: Rasa's reports in out/<name>, our records returned."""
    from rasa.core.agent import Agent

    for name, test_file in test_files.items():
        # The evaluation a tester runs by hand; its reports land in out/<name>.
        subprocess.run([str(RASA), "test", "nlu", "--model", str(model), "--nlu", str(test_file),
                        "--out", str(out / name), "--successes", "--quiet"], check=True, cwd=ROOT)
    from rasa.nlu import test as nlu_test

    processor = Agent.load(str(model)).processor
    records = {}
    for name, test_file in test_files.items():
        data = load_nlu(test_file)
        combined_entity_report((await nlu_test.get_eval_data(processor, data))[2], out / name)
        records[name] = await predict(processor, data)
    return records


async def cross_validation(config: Path, data_path: Path, out: Path, folds: int, seed: int) -> list[dict]:
    import numpy as np
    from rasa.core.agent import Agent
    from rasa.nlu import test as nlu_test
    from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLWriter

    data = load_nlu(data_path)
    np.random.seed(seed)  # StratifiedKFold(shuffle=True) in generate_folds draws from numpy's global state
    intent_results, entity_results, response_results, records = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for fold, (train_data, test_data) in enumerate(nlu_test.generate_folds(folds, data)):
            train_file = Path(tmp) / "train.yml"
            RasaYAMLWriter().dump(train_file, train_data)
            model = train(config, train_file, Path(tmp), f"fold{fold}")
            processor = Agent.load(str(model)).processor
            intents, responses, entities = await nlu_test.get_eval_data(processor, test_data)
            intent_results += intents
            entity_results += entities
            response_results += responses
            records += await predict(processor, test_data)
            model.unlink()
    report_dir = str(out / "cv")
    os.makedirs(report_dir, exist_ok=True)
    nlu_test.evaluate_intents(intent_results, report_dir, True, True, False, report_as_dict=True)
    nlu_test.evaluate_response_selections(response_results, report_dir, True, True, False, report_as_dict=True)
    nlu_test.evaluate_entities(entity_results, nlu_test._get_active_entity_extractors(entity_results),
                               report_dir, True, True, False, report_as_dict=True)
    combined_entity_report(entity_results, out / "cv")
    return records


def apply_thresholds(records: list[dict], threshold: float, ambiguity: float) -> list[dict]:
    return [dict(r, predicted_with=decide(r, threshold, ambiguity)) for r in records]


def print_block(title: str, figures: dict, entities: dict, responses: dict, doses: dict) -> None:
    print(f"\n{title}")
    print(f"  intent accuracy      {figures['accuracy']:.3f}   ({figures['examples']} messages, "
          f"{figures['fallbacks']} sent to the fallback)")
    print(f"  intent macro F1      {figures['macro_f1']:.3f}")
    print(f"  top intent right     {figures['top_intent_accuracy']:.3f}   (the classifier alone, before the fallback)")
    if figures["out_of_scope_routed"] is not None:
        print(f"  out of scope routed  {figures['out_of_scope_routed']:.3f}   (to out_of_scope or the fallback)")
    if responses:
        print(f"  FAQ answered right   {responses['faq_answered_right']:.3f}   (intent faq and the right topic, "
              f"{responses['faq_examples']} questions)")
    for extractor, e in entities.items():
        print(f"  entity F1 {extractor:<22} micro {e['micro_f1']:.3f}  macro {e['macro_f1']:.3f}")
        print("      " + "  ".join(f"{name} {v['f1']:.3f} ({v['support']})"
                                   for name, v in sorted(e["per_entity"].items())))
    if doses.get("dose_mentions"):
        print(f"  dose value right     {doses['dose_value_accuracy']:.3f}   ({doses['dose_mentions']} doses: "
              f"the synonym-mapped value is 1/2/3 as annotated)")


def thresholds_summary(cv_records: list[dict], predictions: dict[str, list[dict]]) -> tuple[dict, dict]:
    """Thresholds chosen on the out-of-fold predictions, then checked on each held-out file."""
    table = threshold_costs(cv_records)
    chosen = choose_thresholds(table)
    pair = (chosen["threshold"], chosen["ambiguity_threshold"])
    summary = {"chosen_on_cv": chosen}
    tables = {"cv": table}
    for name, records in predictions.items():
        tables[name] = threshold_costs(records)
        summary[f"same_on_{name}"] = next(row for row in tables[name]
                                          if (row["threshold"], row["ambiguity_threshold"]) == pair)
        summary[f"{name}_figures_with_chosen"] = intent_figures(apply_thresholds(records, *pair), "predicted_with")
    return summary, tables


def held_out_summary(records: list[dict], report_dir: Path) -> dict:
    summary = {**intent_figures(records), **response_figures(records), **dose_values(records),
               "entities": entity_figures(report_dir), "per_intent": per_intent_figures(records)}
    if any(r.get("family") for r in records):
        summary["per_family"] = family_figures(records)
    return {**summary, "confidences": confidence_summary(records), "errors": errors_of(records)}


def print_tables(h: dict) -> None:
    if "per_family" in h:
        print("  per family                  messages  accuracy  answered right (FAQ topic too)")
        for family, row in h["per_family"].items():
            print(f"    {family:<26} {row['examples']:>6}    {row['accuracy']:.3f}     {row['answered_right']:.3f}")
    print("  per intent                  messages  precision  recall   F1")
    for intent, row in h["per_intent"]["intents"].items():
        print(f"    {intent:<26} {row['examples']:>6}    {row['precision']:.3f}      {row['recall']:.3f}    {row['f1']:.3f}")
    if h["per_intent"]["faq_topics"]:
        print("  per FAQ topic                            messages  answered right")
        for topic, row in h["per_intent"]["faq_topics"].items():
            print(f"    {topic:<40} {row['examples']:>3}    {row['answered_right']:.3f}")


def print_errors(h: dict) -> None:
    print("  misclassified: " + ("none" if not h["errors"] else ""))
    for e in h["errors"]:
        family = f"[{e['family']}] " if e.get("family") else ""
        print(f"    {e['target']:>26} -> {e['predicted']:<26} {family}{e['text'].strip()}")


def print_goals(title: str, h: dict, goal_intent: float) -> None:
    print(f"\nGoals on {title}:")
    entity = h["entities"].get(ALL_EXTRACTORS) or next(iter(h["entities"].values()), {"per_entity": {}})
    entity = entity["per_entity"]
    for label, value, goal in [("intent accuracy", h["accuracy"], goal_intent),
                               ("intent macro F1", h["macro_f1"], goal_intent),
                               ("out of scope routed", h["out_of_scope_routed"], GOAL_OUT_OF_SCOPE)] + \
                              [(f"entity F1 {name}", entity.get(name, {}).get("f1"), GOAL_ENTITY)
                               for name in KEY_ENTITIES]:
        verdict = "n/a" if value is None else ("met" if value >= goal else "NOT met")
        print(f"  {label:<22} {'-' if value is None else f'{value:.3f}':>6}  goal {goal:.2f}  {verdict}")


def shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config.yml")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "nlu")
    parser.add_argument("--test", type=Path, default=ROOT / "tests" / "nlu" / "test_nlu.yml")
    parser.add_argument("--independent", type=Path, default=ROOT / "tests" / "nlu" / "test_nlu_independent.yml",
                        help="the second held-out file, written without reading data/nlu (issue 20)")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "current.tar.gz",
                        help="model to test on the held-out files (default: the one `make train` writes)")
    parser.add_argument("--train", type=Path, help="train a scratch NLU model into this folder and test that")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "nlu")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20211001)
    parser.add_argument("--no-cv", "--heldout-only", dest="no_cv", action="store_true",
                        help="only the held-out files: skip the cross-validation (and threshold search)")
    return parser.parse_args(argv)


def held_out_files(args: argparse.Namespace) -> dict[str, Path]:
    """The held-out files by report directory: heldout/ and independent/."""
    return {"heldout": args.test, "independent": args.independent}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rasa.utils.common import configure_logging_and_warnings
    from rasa.utils.log_utils import configure_structlog

    # Rasa logs every parsed message at debug level; the figures are what matters here.
    configure_logging_and_warnings(logging.WARNING)
    configure_structlog(logging.WARNING)
    os.chdir(ROOT)  # the pipeline names nlu_components.* and its lexicon relative to the project
    sys.path.insert(0, str(ROOT))

    files = held_out_files(args)
    training = load_nlu(args.data)
    for test_file in files.values():
        duplicates = check_independent(training, load_nlu(test_file))
        if duplicates:
            print(f"held-out messages in {shown(test_file)} that are also training examples:\n  "
                  + "\n  ".join(duplicates))
            return 1

    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"config": str(args.config), "test_file": str(args.test),
                     "independent_file": str(args.independent)}
    model = args.model
    if args.train:
        started = time.monotonic()
        model = train(args.config, args.data, args.train, "nlu")
        summary["training_seconds"] = round(time.monotonic() - started)

    predictions = asyncio.run(held_out(model, files, args.out))
    for name, records in predictions.items():
        summary[name] = held_out_summary(records, args.out / name)
        (args.out / f"predictions-{name}.json").write_text(json.dumps(records, indent=1, ensure_ascii=False))

    if not args.no_cv:
        cv_records = asyncio.run(cross_validation(args.config, args.data, args.out, args.folds, args.seed))
        (args.out / "predictions-cv.json").write_text(json.dumps(cv_records, indent=1, ensure_ascii=False))
        summary["cv"] = {**intent_figures(cv_records), **response_figures(cv_records), **dose_values(cv_records),
                         "entities": entity_figures(args.out / "cv"),
                         "confidences": confidence_summary(cv_records), "errors": errors_of(cv_records)}
        summary["thresholds"], tables = thresholds_summary(cv_records, predictions)
        (args.out / "thresholds.json").write_text(json.dumps(tables, indent=1))

    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))

    h = summary["heldout"]
    print_block(f"Held-out file {shown(args.test)}", h, h["entities"],
                {k: h[k] for k in ("faq_examples", "faq_answered_right") if k in h}, h)
    print_errors(h)
    i = summary["independent"]
    print_block(f"Independent held-out file {shown(args.independent)} (written without reading data/nlu)",
                i, i["entities"], {k: i[k] for k in ("faq_examples", "faq_answered_right") if k in i}, i)
    print_tables(i)
    print_errors(i)
    if "cv" in summary:
        c = summary["cv"]
        print_block(f"{args.folds}-fold cross-validation on {shown(args.data)} (seed {args.seed})", c, c["entities"],
                    {k: c[k] for k in ("faq_examples", "faq_answered_right") if k in c}, c)
        t = summary["thresholds"]
        print(f"\nThresholds from the out-of-fold confidences: fallback {t['chosen_on_cv']['threshold']}, "
              f"ambiguity {t['chosen_on_cv']['ambiguity_threshold']} "
              f"(CV: {t['chosen_on_cv']['misrouted']} misrouted, {t['chosen_on_cv']['needless_fallbacks']} needless "
              f"fallbacks; held-out: {t['same_on_heldout']['misrouted']} misrouted, "
              f"{t['same_on_heldout']['needless_fallbacks']} needless fallbacks; independent: "
              f"{t['same_on_independent']['misrouted']} misrouted, "
              f"{t['same_on_independent']['needless_fallbacks']} needless fallbacks)")
    print_goals("the held-out file", h, GOAL_INTENT)
    print_goals("the independent file", i, GOAL_INDEPENDENT_INTENT)
    if "training_seconds" in summary:
        print(f"\ntraining (NLU only): {summary['training_seconds']} s")
    print(f"\nreports: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
