"""Budget -> schedule rule and explicit schedules."""

import pytest

from visiondrop.schedule import Schedule, StageSpec, default_stage_layers, schedule_from_budget


def test_released_preset_for_budget_32():
    schedule = schedule_from_budget(32, num_layers=32, available=577)
    assert schedule.encoder == StageSpec(42, 6)
    assert schedule.layers == (8, 16, 24)
    assert schedule.llm == (StageSpec(30, 5), StageSpec(22, 4), StageSpec(16, 3))


@pytest.mark.parametrize("num_layers", [4, 8, 12, 32, 40])
@pytest.mark.parametrize("budget", [8, 16, 32, 64, 128, 192, 300, 576])
def test_layer_average_is_the_budget(num_layers, budget):
    schedule = schedule_from_budget(budget, num_layers, available=576)
    counts = schedule.tokens_per_layer(num_layers, schedule.encoder.total)
    assert abs(sum(counts) / num_layers - budget) <= 1
    assert schedule.encoder.total == min(round(1.5 * budget), 576)
    assert all(b <= a for a, b in zip(counts, counts[1:]))


def test_default_layers():
    assert default_stage_layers(32) == (8, 16, 24)
    assert default_stage_layers(8) == (2, 4, 6)
    assert default_stage_layers(2) == (1,)


def test_explicit_schedule_coerces_tuples_and_validates_layers():
    schedule = Schedule(encoder=(42, 6), llm=[(30, 5), (22, 4), (16, 3)])
    assert schedule.resolved_layers(32) == (8, 16, 24)
    assert schedule.tokens_per_layer(32, 48) == [48] * 8 + [35] * 8 + [26] * 8 + [19] * 8
    with pytest.raises(ValueError, match=r"schedule.layers\[2\] = 32 is out of range"):
        Schedule(llm=[(3, 0)] * 3, layers=(8, 16, 32)).resolved_layers(32)
    with pytest.raises(ValueError, match="strictly increasing"):
        Schedule(llm=[(3, 0)] * 2, layers=(16, 8)).resolved_layers(32)
    with pytest.raises(ValueError, match="layer 0 is never pruned"):
        Schedule(llm=[(3, 0)], layers=(0,)).resolved_layers(32)
    with pytest.raises(ValueError, match="dominant must be >= 0"):
        Schedule(llm=[(-1, 2)])
    with pytest.raises(ValueError, match="at least one token"):
        Schedule(llm=[(0, 0)])
    assert Schedule(encoder=(0, 4)).encoder.total == 4  # pooling: merged tokens only
    with pytest.raises(ValueError, match="contextual must be >= 0"):
        Schedule(encoder=(4, -1))


def test_unreachable_budget_is_an_error_not_a_wrong_schedule():
    with pytest.raises(ValueError, match="entry_factor must be >= 1"):
        schedule_from_budget(64, 32, available=576, entry_factor=0.5)
    with pytest.raises(ValueError, match="budget=32 is too small"):
        schedule_from_budget(32, 4, available=576, entry_factor=3, layers=(3,))


def test_default_layers_for_other_stage_counts():
    assert Schedule(llm=[(4, 0)]).resolved_layers(32) == (16,)
    assert Schedule(llm=[(4, 0)] * 4).resolved_layers(10) == (2, 4, 6, 8)
    with pytest.raises(ValueError, match="has room for fewer"):
        Schedule(llm=[(4, 0)] * 3).resolved_layers(2)
