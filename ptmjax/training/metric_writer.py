"""Training metrics a user can plot: `metrics.jsonl` (one JSON object per logged step) and
TensorBoard event files, written by process 0 only."""

from __future__ import annotations

import json
import time

import numpy as np

from ptmjax import paths
from ptmjax.run_dir import RunDir


class MetricWriter:
  """metrics.jsonl (one object per logged step) and TensorBoard event files; process 0 only.

  On a local disk rows are appended and flushed as they come. An object store has no
  append (through gcsfs, opening `metrics.jsonl` for append and writing replaced the
  object, so a resumed run lost its history): there the rows are kept in memory, with
  the stored ones read back first, and the whole object is rewritten at most every
  `flush_every_s` seconds, at each checkpoint (`flush()`) and at the end.
  """

  def __init__(self, run_dir, enabled: bool, flush_every_s: float = 30.0):
    self.enabled = enabled
    if not enabled:
      return
    from tensorboardX import SummaryWriter

    run_dir = RunDir.at(run_dir)
    self.path = run_dir.metrics
    self.remote = paths.is_remote(run_dir.root)
    self.flush_every_s = flush_every_s
    if self.remote:
      self.rows = self.path.read_text().splitlines(keepends=True) if self.path.exists() else []
      self.flushed = time.monotonic()
      self.dirty = False
    else:
      self.file = open(self.path, 'a')  # noqa: SIM115 - closed in close()
    self.tb = SummaryWriter(str(run_dir.tensorboard))

  def write(self, step: int, values: dict) -> None:
    if not self.enabled:
      return
    clean = {
      k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v)
      for k, v in values.items()
    }
    line = json.dumps({'step': int(step), **clean}) + '\n'
    if self.remote:
      self.rows.append(line)
      self.dirty = True
      if time.monotonic() - self.flushed >= self.flush_every_s:
        self.flush()
    else:
      self.file.write(line)
      self.file.flush()
    for k, v in clean.items():
      if isinstance(v, float) and np.isfinite(v):
        self.tb.add_scalar(k, v, step)
    self.tb.flush()

  def flush(self) -> None:
    if self.enabled and self.remote and self.dirty:
      self.path.write_text(''.join(self.rows))
      self.flushed, self.dirty = time.monotonic(), False

  def close(self) -> None:
    if self.enabled:
      if self.remote:
        self.flush()
      else:
        self.file.close()
      self.tb.close()
