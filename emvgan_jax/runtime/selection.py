"""Model selection and early stopping on one metric, keeping an on-device copy of the best state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MODES = ("min", "max")


class Selection:
  """Early-stopping bookkeeping on the configured selection metric, with the best state so far.

  Attributes:
    metric, mode, patience: from `config.train.selection_*` and `config.train.patience`.
    best_value, best_step: the best evaluation so far (None before the first).
    bad_evals: evaluations since the last improvement.
    best: `(step, state)`, a copy of the best state seen by *this process* (None after a resume until the
      selection improves again: the best state of before is already in the `best` checkpoint).
  """

  def __init__(self, metric: str, mode: str, patience: int, *, copy_state: Callable[[Any], Any] | None = None):
    if mode not in MODES:
      raise ValueError(f"config.train.selection_mode must be 'min' or 'max', got {mode!r}")
    self.metric, self.mode, self.patience = metric, mode, patience
    self.best_value: float | None = None
    self.best_step: int | None = None
    self.bad_evals = 0
    self.best: tuple[int, Any] | None = None
    self._copy_state = copy_state or (lambda s: s)

  def update(self, value: float, step: int, state: Any = None) -> bool:
    """Records one evaluation of `state` at `step`; returns whether it is a new best (then `best` is its copy)."""
    better = self.best_value is None or (value < self.best_value if self.mode == "min" else value > self.best_value)
    if better:
      self.best_value, self.best_step, self.bad_evals = value, step, 0
      self.best = (step, self._copy_state(state))
    else:
      self.bad_evals += 1
    return better

  @property
  def should_stop(self) -> bool:
    return self.patience > 0 and self.bad_evals >= self.patience

  @property
  def ever_evaluated(self) -> bool:
    return self.best_step is not None

  def to_json(self) -> dict[str, Any]:
    """What a checkpoint stores of the selection (the best state itself is the `best` checkpoint)."""
    return {"best_value": self.best_value, "best_step": self.best_step, "bad_evals": self.bad_evals}

  def load(self, d: dict[str, Any]) -> None:
    self.best_value, self.best_step, self.bad_evals = d["best_value"], d["best_step"], d["bad_evals"]

  def results_block(self, split: str) -> dict[str, Any]:
    """The `selection` block of results.json."""
    return {
      "split": split,
      "metric": self.metric,
      "mode": self.mode,
      "best_value": self.best_value,
      "best_step": self.best_step,
    }
