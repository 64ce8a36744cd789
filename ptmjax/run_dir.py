"""The training work dir as a file format, owned here: every name in it, and how to read it.

    WORKDIR/
      config.json       the resolved config the run trains with (its identity: issue 28)
      run_info.json     data counts, channels, candidates, homology filtering
      metrics.jsonl     one JSON row per logged or evaluated step (what a user plots)
      thresholds.json   best-F1 thresholds per channel on validation (last evaluation)
      timing.json       training seconds over every invocation (studies/runs.py)
      checkpoints/      Orbax checkpoints to resume from (latest, and the best ones)
      tensorboard/      the same metrics for TensorBoard (optional)
      final/            the model folder (`ptmjax.checkpoint`): ptmjax_model.json, params/

A model folder is `final/` or any folder holding MODEL_FILE. Nothing else in the package
spells these names: it asks a `RunDir`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import pathlib
import socket
import time

from ptmjax import paths
from ptmjax.errors import WorkdirError

log = logging.getLogger(__name__)

MODEL_FILE = 'ptmjax_model.json'  # a model folder's description (ptmjax.checkpoint)
PARAMS = 'params'  # a model folder's weights (Orbax)
# A shipped model's weights: one compressed .npz of float16 arrays keyed by parameter path
# (a model inside the wheel weighs half as much; loaded back as the model's dtype).
COMPACT_PARAMS = 'params.npz'


@dataclasses.dataclass(frozen=True)
class RunDir:
  """One training work dir (local or gs://)."""

  root: object  # pathlib.Path or an epath for gs://

  CONFIG = 'config.json'
  RUN_INFO = 'run_info.json'
  METRICS = 'metrics.jsonl'
  THRESHOLDS = 'thresholds.json'
  TIMING = 'timing.json'
  CHECKPOINTS = 'checkpoints'
  TENSORBOARD = 'tensorboard'
  FINAL = 'final'
  LOCK = '.lock'
  # Written by the study archive into a run it restores (trained elsewhere): its training
  # seconds belong to the study, not to this work dir's wall time.
  RESTORED = 'restored_from.txt'
  # What describes a finished run without its weights (the study archive copies these).
  RECORD_FILES = (CONFIG, RUN_INFO, METRICS, TIMING, THRESHOLDS)

  @classmethod
  def at(cls, path, what: str = 'work dir') -> RunDir:
    return path if isinstance(path, RunDir) else cls(paths.as_path(path, what))

  @classmethod
  def of_model(cls, model_folder) -> RunDir:
    """The work dir a `final/` model folder belongs to."""
    return cls(paths.as_path(model_folder).parent)

  # Paths.
  @property
  def config(self):
    return self.root / self.CONFIG

  @property
  def run_info(self):
    return self.root / self.RUN_INFO

  @property
  def metrics(self):
    return self.root / self.METRICS

  @property
  def thresholds(self):
    return self.root / self.THRESHOLDS

  @property
  def timing(self):
    return self.root / self.TIMING

  @property
  def checkpoints(self):
    return self.root / self.CHECKPOINTS

  @property
  def tensorboard(self):
    return self.root / self.TENSORBOARD

  @property
  def final(self):
    return self.root / self.FINAL

  # State.
  def is_finished(self) -> bool:
    """A final model folder is there (written last, whole: `checkpoint.save_model`)."""
    return (self.final / MODEL_FILE).exists()

  def has_checkpoints(self) -> bool:
    """A run that saved at least one checkpoint to resume from."""
    return self.checkpoints.exists() and any(self.checkpoints.glob('*/*'))

  # Reading.
  def read_config(self) -> dict | None:
    return json.loads(self.config.read_text()) if self.config.is_file() else None

  def read_run_info(self) -> dict:
    if not self.run_info.is_file():
      raise FileNotFoundError(f'{self.run_info}: not a training work dir (no {self.RUN_INFO})')
    return json.loads(self.run_info.read_text())

  def metric_rows(self) -> list[dict]:
    """Every row of metrics.jsonl ([] before the first log)."""
    if not self.metrics.exists():
      return []
    return [json.loads(x) for x in self.metrics.read_text().splitlines() if x.strip()]

  def step_cap(self) -> int:
    """The run's configured `optim.total_steps`."""
    return int(self.read_config()['optim']['total_steps'])

  # Writing (process 0's job; the trainer calls these).
  def write_json(self, path, data) -> None:
    path.write_text(json.dumps(data, indent=2) + '\n')

  def drop_rows_after(self, step: int) -> None:
    """Keeps the metrics rows up to the step a run resumes from: rows a killed run logged
    after its last checkpoint are logged again when those steps are re-run."""
    path = self.metrics
    if not path.is_file():
      return
    lines = path.read_text().splitlines(keepends=True)
    keep = [x for x in lines if x.strip() and json.loads(x).get('step', 0) <= step]
    if len(keep) != len(lines):
      if paths.is_remote(path):  # an object is replaced whole by one write
        path.write_text(''.join(keep))
      else:
        tmp = path.with_suffix('.tmp')
        tmp.write_text(''.join(keep))
        tmp.replace(path)
      log.info('%s: dropped %d rows past step %d', self.METRICS, len(lines) - len(keep), step)

  def move_aside(self) -> pathlib.Path | None:
    """`--restart`: renames the work dir to WORKDIR.replaced-<time> (never deletes)."""
    if not self.root.exists():
      return None
    target = self.root.parent / f'{self.root.name}.replaced-{time.strftime("%Y%m%d-%H%M%S")}'
    self.root.rename(target)
    log.warning('%s: the earlier run moved to %s', self.root, target)
    return target

  @contextlib.contextmanager
  def lock(self, is_main: bool = True):
    """One trainer per work dir (process 0 holds it): a second one used to interleave
    metrics.jsonl and die in Orbax. An flock, so the kernel drops it with its process:
    a crashed or killed run leaves no stale lock behind."""
    if not is_main:
      yield
      return
    if paths.is_remote(self.root):
      # Object stores have no advisory locks; one run per gs:// work dir is up to the user.
      log.warning('%s: not locked (object store): run one trainer per work dir', self.root)
      yield
      return
    f = open(pathlib.Path(self.root) / self.LOCK, 'a+')  # noqa: SIM115 - held for the run
    try:
      try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or 'another process'
        raise WorkdirError(
          f'{self.root} is in use by {holder}; wait for it to finish or stop it, or use '
          'another --workdir'
        ) from None
      f.seek(0)
      f.truncate()
      stamp = time.strftime('%Y-%m-%d %H:%M:%S')
      f.write(f'process {os.getpid()} on {socket.gethostname()} since {stamp}\n')
      f.flush()
      yield
    finally:
      f.close()  # releases the lock
