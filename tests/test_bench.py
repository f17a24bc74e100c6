"""tools/bench.py without servers: the texts it sends (the mix, and every text new yet still
understood by the trained model) and the shape of its report. No timing is asserted."""

from __future__ import annotations

import collections

import pytest

from actions.parsing import parse_dose, parse_field, parse_yes_no
from tools import bench

OUR_INTENTS = ("greet", "check_vaccination_status", "download_certificate", "change_personal_info", "affirm",
               "goodbye")


def test_new_texts_are_never_repeated_and_the_mix_always_is():
    new, mix = bench.NewTexts(seed=7), bench.MixTexts()
    said = [new(step) for _ in range(400) for step in bench.NEW_TEXTS]
    assert len(said) == len(set(said)) == 400 * len(bench.NEW_TEXTS)
    assert set(bench.NEW_TEXTS) >= set(bench.MIX_TEXTS)
    assert {mix("greet") for _ in range(3)} == {"halo"}
    # Different runs send different texts; the same seed the same ones.
    assert [bench.NewTexts(seed=1)("greet") for _ in range(2)] == [bench.NewTexts(seed=1)("greet")] * 2
    assert len({bench.NewTexts(seed=s)("goodbye") + bench.NewTexts(seed=s)("affirm") for s in range(20)}) > 5


def test_new_texts_still_say_what_the_step_needs():
    """The dose, the field and the yes are read by the actions' parsers, not the model: every
    variant must pass, or the flow would go astray and the run count errors."""
    new = bench.NewTexts(seed=3)
    for _ in range(300):
        assert parse_dose(new("dose_2")) == 2
        assert parse_yes_no(new("affirm")) is True
        assert parse_field(new("change_personal_info")) == "email"


def test_the_trained_model_recognises_most_new_texts():
    from patches_support import load_agent, parses

    new = bench.NewTexts(seed=11)
    texts = [(intent, new(intent)) for intent in OUR_INTENTS for _ in range(10)]
    parsed = parses(load_agent(), [text for _, text in texts])
    right = collections.Counter(intent for (intent, _), p in zip(texts, parsed) if p["intent"]["name"] == intent)
    missed = [(intent, text, p["intent"]["name"]) for (intent, text), p in zip(texts, parsed)
              if p["intent"]["name"] != intent]
    assert sum(right.values()) >= 0.8 * len(texts), missed
    assert all(right[intent] >= 6 for intent in OUR_INTENTS), missed


def sample(turns: int, seconds: float) -> bench.Sample:
    return bench.Sample(latencies=[0.01 * (i + 1) for i in range(turns)], flows=turns // 10, elapsed=seconds,
                        rasa_cpu_s=turns * 0.005)


def test_the_report_puts_new_texts_beside_the_mix():
    runs = {bench.run_name(name, kind): (name, kind) for kind in ("mix", "new") for name in ("ours", "stock")}
    assert list(runs) == ["ours", "stock", "ours_new", "stock_new"]
    turns = {"ours": 300, "stock": 100, "ours_new": 200, "stock_new": 100}
    load = {run: {"16": bench.summarise([sample(turns[run], 10.0)])} for run in runs}
    assert load["ours_new"]["16"]["turns"] == 200 and load["ours_new"]["16"]["turns_per_s"] == 20.0
    assert set(load["stock"]["16"]) >= {"p50_ms", "p95_ms", "p99_ms", "errors", "rasa_cpu_ms_per_turn"}
    assert bench.ratios(load, ["ours", "stock"], ["mix", "new"], [16]) == {"ratio": {"16": 3.0},
                                                                         "ratio_new": {"16": 2.0}}
    assert bench.ratios(load, ["ours", "stock"], ["new"], [16]) == {"ratio_new": {"16": 2.0}}


def test_the_table_shows_both_runs(capsys):
    load = {run: {"16": bench.summarise([sample(100, 10.0)])} for run in ("ours", "stock", "ours_new", "stock_new")}
    report = {"load": load, **bench.ratios(load, ["ours", "stock"], ["mix", "new"], [16]), "rss_mb": {},
              "startup": {}, "certificate_pdf": {}}
    bench.print_table(report, list(load))
    shown = capsys.readouterr().out
    assert "ours_new" in shown and "stock_new" in shown
    assert "ours / stock, realistic mix: {'16': 1.0}" in shown
    assert "ours / stock, every text new: {'16': 1.0}" in shown


@pytest.mark.parametrize("texts", ["", "old", "mix,other"])
def test_an_unknown_texts_choice_is_refused_before_anything_starts(monkeypatch, texts):
    monkeypatch.setattr("sys.argv", ["bench", "--texts", texts])
    monkeypatch.setattr(bench, "prepare_database", lambda url: pytest.fail("started"))
    with pytest.raises(SystemExit) as refused:
        bench.main()
    assert refused.value.code == 2
