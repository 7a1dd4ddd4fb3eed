"""Learning-rate schedules: the rate for step k of N, set before every optimiser step."""

from __future__ import annotations

import math
from collections.abc import Callable

from moonprop.config import (
    ConstantSchedule,
    CosineSchedule,
    LinearSchedule,
    ScheduleConfig,
    StepSchedule,
)


def learning_rate(s: ScheduleConfig, k: int, n: int) -> float:
    """The learning rate at step k (0-based) of n; k = n is the value just past the last step."""
    if isinstance(s, LinearSchedule):  # the seed: 1.0 - 0.9 * k / N
        return s.start - (s.start - s.end) * k / n
    if isinstance(s, CosineSchedule):
        return s.end + (s.start - s.end) * (1 + math.cos(math.pi * k / n)) / 2
    if isinstance(s, StepSchedule):
        return s.start * s.gamma ** (k // s.every)
    if isinstance(s, ConstantSchedule):
        return s.lr
    raise ValueError(f"unknown schedule {s!r}")


def schedule_fn(s: ScheduleConfig, n: int) -> Callable[[int], float]:
    """k -> lr, the form torch's LambdaLR takes (with the optimiser's base rate at 1.0)."""
    return lambda k: learning_rate(s, k, n)
