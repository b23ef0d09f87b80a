"""Learning-rate schedules (torch.optim.lr_scheduler's names and closed forms).

A schedule is run-time state: its numbers travel in the runtime struct and the C step
computes the rate from the step counter (`nncc_scheduled_lr` in templates/kernels/
schedule.c.j2), so changing a schedule never rebuilds. `lr_at` here is the same formula
for the reference interpreter and for reading `trainer.lr`; a test holds the two equal.
The schedule advances once per optimizer step, as calling torch's `scheduler.step()`
after every `optimizer.step()`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

CONSTANT, STEP, EXPONENTIAL, COSINE = 0, 1, 2, 3


@dataclass(frozen=True)
class Constant:
    def lr_at(self, base, step):
        return base

    def fields(self):
        return {"schedule": CONSTANT}


@dataclass(frozen=True)
class StepLR:
    """base * gamma ** (step // step_size)."""

    step_size: int
    gamma: float = 0.1

    def lr_at(self, base, step):
        return base * self.gamma ** (step // self.step_size)

    def fields(self):
        if self.step_size < 1:
            raise ValueError("StepLR step_size must be >= 1")
        return {"schedule": STEP, "gamma": self.gamma, "step_size": self.step_size}


@dataclass(frozen=True)
class ExponentialLR:
    """base * gamma ** step."""

    gamma: float

    def lr_at(self, base, step):
        return base * self.gamma ** step

    def fields(self):
        return {"schedule": EXPONENTIAL, "gamma": self.gamma}


@dataclass(frozen=True)
class CosineAnnealingLR:
    """eta_min + (base - eta_min) * (1 + cos(pi * step / T_max)) / 2."""

    T_max: int
    eta_min: float = 0.0

    def lr_at(self, base, step):
        return self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * step / self.T_max)) / 2

    def fields(self):
        if self.T_max < 1:
            raise ValueError("CosineAnnealingLR T_max must be >= 1")
        return {"schedule": COSINE, "t_max": self.T_max, "eta_min": self.eta_min}


@dataclass(frozen=True)
class LinearWarmup:
    """base * (step + 1) / warmup_steps for the first warmup_steps steps, then `after`
    (default constant) counted from the end of the warm-up."""

    warmup_steps: int
    after: object = None

    def lr_at(self, base, step):
        if step < self.warmup_steps:
            return base * (step + 1) / self.warmup_steps
        return (self.after or Constant()).lr_at(base, step - self.warmup_steps)

    def fields(self):
        if isinstance(self.after, LinearWarmup):
            raise ValueError("LinearWarmup cannot follow another LinearWarmup")
        return {**(self.after or Constant()).fields(), "warmup_steps": self.warmup_steps}


RUNTIME_FIELDS = {"schedule": 0, "warmup_steps": 0, "gamma": 1.0, "step_size": 1, "t_max": 1, "eta_min": 0.0}


def runtime_fields(schedule):
    """Every schedule field of the runtime struct (unused ones at neutral values)."""
    return {**RUNTIME_FIELDS, **(schedule or Constant()).fields()}


def runtime_lr(schedule, base, step):
    """The rate the C step uses: the schedule's value in double, rounded to float32."""
    import numpy as np

    return float(np.float32((schedule or Constant()).lr_at(float(base), int(step))))
