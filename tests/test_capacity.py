"""tools/capacity.py without servers: what holds, the search over loads, and what a load means
per hour. The probes here are a model of a machine (turn time growing with users), not a stack;
the run itself is `make capacity`."""

from __future__ import annotations

import pytest

from tools import capacity


def load(users: int, p99_ms: float, errors: int = 0, turns: int = 100, flows: int = 10) -> dict:
    return {"turns": turns, "turns_per_s": turns / 20, "p99_ms": p99_ms, "errors": errors, "flows_completed": flows,
            "users": users}


def machine(holding: int, calls: list | None = None):
    """p99 under the limit up to `holding` users, over it beyond."""
    def probe(users: int) -> dict:
        if calls is not None:
            calls.append(users)
        return load(users, 900.0 if users <= holding else 1400.0)
    return probe


def test_a_load_holds_only_with_every_turn_answered_within_the_limit():
    assert capacity.holds(load(16, 999.9))
    assert not capacity.holds(load(16, 1000.0))
    assert not capacity.holds(load(16, 200.0, errors=1))
    assert not capacity.holds(load(16, 200.0, turns=0))  # nothing answered is not a pass


@pytest.mark.parametrize("holding, most", [(37, 36), (40, 40), (16, 16), (200, 128), (5, 5), (2, 2), (0, 0)])
def test_the_search_climbs_then_bisects_the_gap(holding, most):
    calls = []
    found = capacity.search(machine(holding, calls), capacity.LADDER)
    assert found["most_users"] == most
    assert len(calls) == len(set(calls))  # no load tried twice
    if most:
        assert found["at"]["users"] == most and capacity.holds(found["at"])
    else:
        assert found["at"] is None
    if holding < capacity.LADDER[-1]:
        assert found["first_failing"] is not None and found["first_failing"] > most
        assert not capacity.holds(found["tried"][str(found["first_failing"])])
    else:
        assert found["first_failing"] is None


def test_the_bisection_stops_after_the_probes_it_was_given():
    calls = []
    found = capacity.search(machine(37, calls), capacity.LADDER, refine=1)
    assert calls == [4, 8, 16, 24, 32, 48, 40]
    assert found["most_users"] == 32 and found["first_failing"] == 40


def test_a_load_per_hour_counts_whole_conversations():
    assert capacity.per_hour(load(16, 500, turns=1200, flows=120), 20) == {"turns_per_s": 60.0,
                                                                            "conversations_per_hour": 21600}
    assert capacity.per_hour(None, 20) == {"turns_per_s": 0, "conversations_per_hour": 0}


@pytest.mark.parametrize("argv", [["--duration", "2"], ["--most", "3"], ["--targets", "ours,other"]])
def test_settings_that_cannot_measure_are_refused_before_anything_starts(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        capacity.main(argv)
    assert exit_.value.code == 2
    assert "--duration at least 5 s" in capsys.readouterr().err
