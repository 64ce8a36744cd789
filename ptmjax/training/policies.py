"""The loop's small decisions, each a value the trainer asks: is it time (to log, evaluate,
save), is this evaluation the best one and has patience run out, and the throughput of the
steps since the last log. Plain Python, unit-tested without a model."""

from __future__ import annotations

import dataclasses
import time

import numpy as np


def itstime(step: int, every: int, total: int, *, last: bool = True) -> bool:
  """Every `every` steps (0: never) and, with `last`, at the final step `total`.

  big_vision's `utils.itstime`: the one test the loop writes for logging, evaluation
  and checkpoints alike."""
  return bool(every and step % every == 0) or (last and step == total)


@dataclasses.dataclass
class BestTracker:
  """The best evaluation so far (by `metric`, higher is better) and patience.

  Its `state()` is saved with every checkpoint, so a resumed run stops where an
  uninterrupted one would; patience counts only from `min_steps` (one noisy evaluation
  of 200 proteins early on must not end a run that has barely started)."""

  metric: str
  patience: int = 0
  min_steps: int = 0
  best: float | None = None
  best_step: int = 0
  bad: int = 0
  metrics: dict = dataclasses.field(default_factory=dict)
  thresholds: dict = dataclasses.field(default_factory=dict)

  STATE = ('best', 'best_step', 'bad', 'metrics', 'thresholds')

  @classmethod
  def from_config(cls, config) -> BestTracker:
    ev = config.eval
    return cls(config.checkpoint.best_metric, ev.get('patience', 0), ev.get('min_steps', 0))

  def update(self, step: int, metrics: dict, thresholds: dict) -> bool:
    """Records one evaluation; True when it is the best so far."""
    value = metrics.get(self.metric)
    if value is not None and (self.best is None or value > self.best):
      self.best, self.best_step, self.bad = float(value), step, 0
      self.metrics = {k: float(v) for k, v in metrics.items()}
      self.thresholds = {k: float(v) for k, v in thresholds.items()}
      return True
    self.bad += 1
    return False

  def should_stop(self, step: int) -> bool:
    return bool(self.patience and self.bad >= self.patience and step >= self.min_steps)

  def describe(self) -> str:
    return (f'no better {self.metric} in {self.patience} evaluations (best {self.best:.4f} '
            f'at step {self.best_step})')  # fmt: skip

  def state(self) -> dict:
    """The checkpointed part (the JSON a checkpoint's `data` item stores as 'tracker')."""
    return {k: getattr(self, k) for k in self.STATE}

  def load(self, state: dict) -> None:
    for k in self.STATE:
      if k in state:
        setattr(self, k, state[k])


class LogWindow:
  """What the steps since the last log did: their losses, residues and token shares."""

  def __init__(self):
    self.reset()

  def reset(self) -> None:
    self.losses: list[float] = []
    self.residues = 0
    self.tokens = 0
    self.real = 0
    self.start = time.perf_counter()

  def add(self, batch: dict, loss: float, residues: int) -> None:
    self.tokens += batch['tokens'].size
    self.real += int((batch['segment_ids'] > 0).sum())
    self.losses.append(loss)
    self.residues += residues

  def summary(self) -> dict:
    """The window's row of metrics.jsonl, then a new window."""
    dt = time.perf_counter() - self.start
    row = {
      'loss': float(np.mean(self.losses)),
      'residues_per_s': self.residues / dt,
      'real_token_share': self.real / max(self.tokens, 1),
    }
    self.reset()
    return row
