"""Training metrics a user can plot: `metrics.jsonl` (one JSON object per logged step) and
TensorBoard event files, written by process 0 only."""

from __future__ import annotations

import json
import pathlib

import numpy as np


class MetricWriter:
  """metrics.jsonl (one object per logged step) and TensorBoard event files; process 0 only."""

  def __init__(self, workdir: pathlib.Path, enabled: bool):
    self.enabled = enabled
    if enabled:
      from tensorboardX import SummaryWriter

      self.file = open(workdir / 'metrics.jsonl', 'a')  # noqa: SIM115 - closed in close()
      self.tb = SummaryWriter(str(workdir / 'tensorboard'))

  def write(self, step: int, values: dict) -> None:
    if not self.enabled:
      return
    clean = {
      k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v)
      for k, v in values.items()
    }
    self.file.write(json.dumps({'step': int(step), **clean}) + '\n')
    self.file.flush()
    for k, v in clean.items():
      if isinstance(v, float) and np.isfinite(v):
        self.tb.add_scalar(k, v, step)
    self.tb.flush()

  def close(self) -> None:
    if self.enabled:
      self.file.close()
      self.tb.close()
