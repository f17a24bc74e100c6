"""tools/soak.py without a stack: memory of a real process tree, the growth arithmetic, the
report's summary and its refusals. No timing is asserted; the soak itself is `make soak`."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from tools import soak


def test_memory_of_a_process_tree_counts_its_children():
    touch = "b = bytearray(60 * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('ready', flush=True)\n" \
            "import time; time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", touch], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"  # its 60 MB are touched, so resident
        alone = soak.tree_memory_mb(psutil.Process(child.pid))
        assert alone > 55
        assert soak.tree_memory_mb(psutil.Process()) >= alone  # the child is in this process's tree
    finally:
        child.kill()
        child.wait()
    assert soak.tree_memory_mb(None) is None


def test_growth_per_hour_is_the_least_squares_slope():
    assert soak.slope_per_hour([(0, 100), (1800, 150), (3600, 200)]) == 100.0
    assert soak.slope_per_hour([(0, 5), (60, 5), (120, 5)]) == 0.0
    assert soak.slope_per_hour([(0, 5), (60, 6)]) is None  # too few points to say
    assert soak.slope_per_hour([(10, 5), (10, 6), (10, 7)]) is None


def sample(t: float, rasa: float, database: float, turns: int = 100, errors: int = 0, p99: float | None = 200.0):
    return {"t_s": t, "memory_mb": {"rasa": rasa, "actions": 100.0, "postgres": None}, "database_mb": database,
            "turns": turns, "errors": errors, "flows": 10, "p99_ms": p99}


def test_the_summary_judges_the_second_half_only():
    # Rasa grows while warming up, then stays flat: the second half's growth is 0.
    samples = [sample(600 * i, 900 + min(i, 3) * 50, 10 + i) for i in range(1, 9)]
    result = soak.summary(samples)
    assert result["processes"]["rasa"] == {"first_mb": 950, "last_mb": 1050, "max_mb": 1050,
                                           "second_half_mb_per_h": 0.0}
    assert result["processes"]["database"]["second_half_mb_per_h"] == 6.0
    assert "postgres" not in result["processes"]  # never seen running: no row rather than zeros
    assert result["turns"] == 800 and result["errors"] == 0 and result["worst_p99_ms"] == 200.0
    assert result["turns_per_s"] == round(800 / 4800, 1)
    assert soak.summary([]) == {"processes": {}, "turns": 0, "errors": 0}


@pytest.mark.parametrize("argv", [["--seconds", "20", "--every", "10"], ["--every", "1"], ["--users", "0"]])
def test_settings_that_cannot_soak_are_refused_before_anything_starts(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        soak.main(argv)
    assert exit_.value.code == 2
    assert "--every at least 5 s" in capsys.readouterr().err


def test_soak_texts_are_new_until_a_step_runs_out_then_the_usual_one(monkeypatch):
    from tools import bench
    from tools.bench import MIX_TEXTS

    monkeypatch.setitem(bench.NEW_TEXTS, "dose_2", ["yg kedua"])  # few variants: used up sooner
    texts = soak.SoakTexts(seed=5)
    new = []
    while "dose_2" not in texts.used_up and len(new) < 50000:
        new.append(texts("dose_2"))
    assert "dose_2" in texts.used_up
    assert new[-1] == MIX_TEXTS["dose_2"]  # the call that found none left
    assert len(new[:-1]) == len(set(new[:-1])) > 10  # never repeated while they lasted
    assert [texts("dose_2") for _ in range(3)] == [MIX_TEXTS["dose_2"]] * 3
    assert texts.used_up == {"dose_2"} and texts("greet") not in new  # other steps still new


def test_soak_texts_have_at_most_one_typo_long_after_the_simple_variants(monkeypatch):
    """NewTexts piles typos on once a step's simple variants are used (the hour's soak saw most
    flows go off track); SoakTexts never puts more than one in a text, and the parsers still
    read the dose, the field and the yes."""
    from actions.parsing import parse_dose, parse_field, parse_yes_no
    from tools.bench import NewTexts

    extra = []  # typos asked for beyond the one a variant may have
    original = NewTexts._variant
    monkeypatch.setattr(NewTexts, "_variant",
                        lambda self, step, typos, more: extra.append(more) or original(self, step, typos, more))
    texts = soak.SoakTexts(seed=9)
    for _ in range(2000):
        assert parse_dose(texts("dose_2")) == 2
        assert parse_yes_no(texts("affirm")) is True
        assert parse_field(texts("change_personal_info")) == "email"
    assert extra and set(extra) == {0}
