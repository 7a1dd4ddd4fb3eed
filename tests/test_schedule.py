import math

import pytest

from moonprop.config import ConstantSchedule, CosineSchedule, LinearSchedule, StepSchedule
from moonprop.schedule import learning_rate

N = 150


@pytest.mark.parametrize("schedule, at_0, at_half, at_n", [
    (LinearSchedule(), 1.0, 0.55, 0.1),  # the seed: 1.0 - 0.9 * k / N
    (LinearSchedule(start=0.5, end=0.3), 0.5, 0.4, 0.3),
    (CosineSchedule(), 1.0, 0.55, 0.1),
    (CosineSchedule(start=2.0, end=0.0 + 1e-3), 2.0, (2.0 + 1e-3) / 2, 1e-3),
    (StepSchedule(), 1.0, 0.5, 0.125),  # halves at 50, 100, 150; k = 75 is past one step
    (StepSchedule(start=0.8, gamma=0.1, every=100), 0.8, 0.8, 0.08),
    (ConstantSchedule(), 0.5, 0.5, 0.5),
    (ConstantSchedule(lr=0.01), 0.01, 0.01, 0.01),
])
def test_values_at_0_half_and_end(schedule, at_0, at_half, at_n):
    assert learning_rate(schedule, 0, N) == pytest.approx(at_0)
    assert learning_rate(schedule, N // 2, N) == pytest.approx(at_half)
    assert learning_rate(schedule, N, N) == pytest.approx(at_n)


def test_seed_schedule_step_by_step():
    assert [learning_rate(LinearSchedule(), k, N) for k in (1, 10, 149)] == pytest.approx(
        [1 - 0.9 / 150, 1 - 9 / 150, 1 - 0.9 * 149 / 150])


def test_cosine_is_between_its_ends_and_decreasing():
    values = [learning_rate(CosineSchedule(), k, N) for k in range(N + 1)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert values[N // 3] == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 3)) / 2)
