"""The independent held-out file (issue 20) and how tools/nlu_report.py reports it: the file's
shape, its independence from training, and the per-family / per-intent arithmetic. No training,
no model: the arithmetic runs on small hand-made prediction lists."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")

from tools import nlu_report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
INDEPENDENT = ROOT / "tests" / "nlu" / "test_nlu_independent.yml"


@pytest.fixture(autouse=True)
def logging_left_as_found():
    """nlu_report.main() sets up Rasa's logging, whose RepeatedLogFilter on the root handlers
    (pytest's capture handlers among them) would hide repeated records in later tests."""
    import logging
    import warnings

    handlers = {handler: list(handler.filters) for handler in logging.getLogger().handlers}
    with warnings.catch_warnings():
        yield
    for handler in logging.getLogger().handlers:
        handler.filters = handlers.get(handler, [f for f in handler.filters
                                                 if type(f).__name__ != "RepeatedLogFilter"])


@pytest.fixture(scope="module")
def independent():
    return nlu_report.load_nlu(INDEPENDENT)


@pytest.fixture(scope="module")
def training():
    return nlu_report.load_nlu(ROOT / "data" / "nlu")


def record(target, predicted, family, target_response=None, predicted_response=None):
    return {"text": f"{target} {predicted}", "target": target, "predicted": predicted, "family": family,
            "target_response": target_response, "predicted_response": predicted_response,
            "ranking": [(predicted, 0.9)] if predicted != nlu_report.FALLBACK else [(target, 0.3)],
            "entities_target": [], "entities_predicted": []}


# --- the file ---------------------------------------------------------------------------------

def test_the_independent_file_is_big_enough_and_every_example_names_its_family(independent):
    examples = independent.intent_examples
    assert len(examples) >= 420
    families = Counter(nlu_report.family_of(m) for m in examples)
    assert set(families) == set(nlu_report.FAMILIES), families  # each family present, no other name


def test_the_independent_file_shares_no_line_with_training(independent, training):
    assert nlu_report.check_independent(training, independent) == []


def intent_names(domain: dict) -> set[str]:
    """domain.yml's intents, written as a name or as {name: {its settings}}."""
    return {next(iter(i)) if isinstance(i, dict) else i for i in domain["intents"]}


def test_the_independent_file_uses_only_the_domains_intents_and_entities(independent):
    domain = yaml.safe_load((ROOT / "domain.yml").read_text())
    assert {m.get("intent") for m in independent.intent_examples} <= intent_names(domain)
    assert {e["entity"] for m in independent.intent_examples for e in m.get("entities") or []} \
        <= set(domain["entities"])


def test_every_intent_and_faq_topic_has_enough_examples(independent):
    counts = Counter(m.get_full_intent() for m in independent.intent_examples)
    domain = yaml.safe_load((ROOT / "domain.yml").read_text())
    assert intent_names(domain) - {"faq"} <= set(counts)
    # ask_booster_timing was the FAQ topic booster_timing when the file was written (see its header)
    topic_sized = {intent for intent in counts if intent.startswith("faq/")} | {"ask_booster_timing"}
    assert all(n >= (5 if intent in topic_sized else 10) for intent, n in counts.items()), counts
    assert "faq/cost" in counts  # the new topic of issue 20


# --- the independence check covers both files -----------------------------------------------

def test_the_report_refuses_an_independent_file_holding_a_training_line(training, tmp_path, capsys):
    line = training.intent_examples[0]
    copied = tmp_path / "independent.yml"
    copied.write_text(yaml.safe_dump({"version": "3.1", "nlu": [
        {"intent": line.get("intent"), "examples": f"- {line.get('text').upper()}  \n- sebuah kalimat baru sekali\n"}]}))
    assert nlu_report.main(["--independent", str(copied), "--heldout-only", "--out", str(tmp_path / "out")]) == 1
    assert str(copied) in capsys.readouterr().out
    assert not (tmp_path / "out").exists()  # refused before any model was loaded or report written


def test_heldout_only_runs_both_files_and_skips_the_cross_validation():
    args = nlu_report.parse_args(["--heldout-only"])
    assert args.no_cv is True
    assert nlu_report.held_out_files(args) == {"heldout": ROOT / "tests" / "nlu" / "test_nlu.yml",
                                               "independent": INDEPENDENT}
    assert nlu_report.parse_args([]).no_cv is False


# --- the arithmetic ---------------------------------------------------------------------------

FAKE = [
    record("greet", "greet", "plain"),
    record("report_problem", "faq", "plain"),
    record("report_problem", "report_problem", "complaint_story"),
    record("report_problem", "faq", "complaint_story"),
    record("report_problem", nlu_report.FALLBACK, "complaint_story"),
    record("faq", "faq", "cost", "faq/cost", "faq/cost"),
    record("faq", "faq", "cost", "faq/cost", "faq/certificate_validity"),  # intent right, topic wrong
    record("out_of_scope", nlu_report.FALLBACK, "near_domain_oos"),
]


def test_family_table_counts_intent_accuracy_and_answers_with_their_topic():
    table = nlu_report.family_figures(FAKE)
    assert list(table) == ["complaint_story", "plain", "cost", "near_domain_oos"]  # most examples first
    assert table["complaint_story"] == {"examples": 3, "accuracy": 0.3333, "answered_right": 0.3333}
    assert table["plain"] == {"examples": 2, "accuracy": 0.5, "answered_right": 0.5}
    assert table["cost"] == {"examples": 2, "accuracy": 1.0, "answered_right": 0.5}
    assert table["near_domain_oos"] == {"examples": 1, "accuracy": 0.0, "answered_right": 0.0}


def test_per_intent_table_is_over_the_true_intents_with_the_fallback_a_miss():
    table = nlu_report.per_intent_figures(FAKE)
    intents = table["intents"]
    assert set(intents) == {"greet", "report_problem", "faq", "out_of_scope"}  # no nlu_fallback row
    assert intents["report_problem"] == {"examples": 4, "precision": 1.0, "recall": 0.25, "f1": 0.4}
    # faq: two right of two, but two report_problem messages went to faq as well
    assert intents["faq"] == {"examples": 2, "precision": 0.5, "recall": 1.0, "f1": 0.6667}
    assert intents["out_of_scope"]["recall"] == 0.0
    assert table["faq_topics"] == {"faq/cost": {"examples": 2, "answered_right": 0.5}}


def test_summary_of_a_held_out_set_carries_the_family_and_intent_tables(tmp_path):
    summary = nlu_report.held_out_summary(FAKE, tmp_path)
    assert summary["accuracy"] == 0.5  # 4 of 8: the faq answered with the wrong topic is right as an intent
    assert summary["out_of_scope_routed"] == 1.0  # the fallback counts as routed
    assert summary["per_family"]["cost"]["answered_right"] == 0.5
    assert summary["per_intent"]["intents"]["greet"]["f1"] == 1.0
    assert {e["family"] for e in summary["errors"]} == {"plain", "complaint_story", "near_domain_oos"}
    # the old file has no families: no family table rather than one row of "-"
    plain = [dict(r, family=None) for r in FAKE]
    assert "per_family" not in nlu_report.held_out_summary(plain, tmp_path)


def test_thresholds_chosen_on_cv_are_checked_on_both_held_out_files():
    cv = [record("greet", "greet", None), record("thank", "thank", None)]  # right at 0.9: no fallback needed
    summary, tables = nlu_report.thresholds_summary(
        cv, {"heldout": [record("greet", "greet", None)],
             "independent": [record("greet", "greet", "plain"), record("report_problem", "faq", "complaint_story")]})
    assert (summary["chosen_on_cv"]["threshold"], summary["chosen_on_cv"]["ambiguity_threshold"]) == (0.0, 0.0)
    assert summary["same_on_heldout"]["misrouted"] == 0
    assert (summary["same_on_independent"]["threshold"], summary["same_on_independent"]["misrouted"]) == (0.0, 1)
    assert summary["independent_figures_with_chosen"]["accuracy"] == 0.5
    assert set(tables) == {"cv", "heldout", "independent"}
    assert len(tables["independent"]) == len(nlu_report.FALLBACK_GRID) * len(nlu_report.AMBIGUITY_GRID)


def test_family_of_reads_the_metadata_rasa_keeps(independent):
    first = independent.intent_examples[0]
    assert nlu_report.family_of(first) in nlu_report.FAMILIES
    from rasa.shared.nlu.training_data.message import Message
    assert nlu_report.family_of(Message(data={"text": "halo", "intent": "greet"})) is None
