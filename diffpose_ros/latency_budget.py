"""Automatic step selection under a latency budget (ROS-free, so it is unit-tested).

The pose stage costs ``fixed_ms`` (detector, crop, backbone, STRL, decode) plus ``per_step_ms``
per denoising step. Given a budget, run the most steps whose measured cost fits, capped at
``max_steps``; if even one step does not fit, run one and say so.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class StepChoice:
    steps: int
    fits: bool            # False: even one step exceeds the budget
    note: str             # for diagnostics ('' when fine)


def choose_steps(budget_ms: float, fixed_ms: float, per_step_ms: float,
                 max_steps: int) -> StepChoice:
    if budget_ms <= 0:
        raise ValueError(f'budget_ms must be > 0, got {budget_ms}')
    if max_steps < 1:
        raise ValueError(f'max_steps must be >= 1, got {max_steps}')
    per_step_ms = max(per_step_ms, 1e-3)
    affordable = int((budget_ms - fixed_ms) // per_step_ms)
    if affordable < 1:
        one_step_ms = fixed_ms + per_step_ms
        return StepChoice(1, False, f'latency budget {budget_ms:.0f} ms is below the 1-step '
                                    f'cost {one_step_ms:.0f} ms: running 1 step')
    return StepChoice(min(affordable, max_steps), True, '')


class CostTracker:
    """Exponential moving averages of the fixed and per-step cost of recent frames."""

    def __init__(self, smoothing: float = 0.2):
        if not 0 < smoothing <= 1:
            raise ValueError(f'smoothing must be in (0, 1], got {smoothing}')
        self.smoothing = smoothing
        self.fixed_ms: float | None = None
        self.per_step_ms: float | None = None

    def update(self, timings_ms: dict[str, float], steps: int) -> None:
        per_step = timings_ms.get('denoise', 0.0) / max(steps, 1)
        fixed = sum(v for k, v in timings_ms.items() if k != 'denoise')
        a = self.smoothing
        self.per_step_ms = per_step if self.per_step_ms is None else (
            (1 - a) * self.per_step_ms + a * per_step)
        self.fixed_ms = fixed if self.fixed_ms is None else (1 - a) * self.fixed_ms + a * fixed

    @property
    def ready(self) -> bool:
        return self.fixed_ms is not None and self.per_step_ms is not None
