"""What every study does with a training run: run it or resume it, time it, say where it came from.

* `train(config, workdir)`: skipped when `workdir/final` is a finished model,
  else `ptmjax.training.trainer.train`, which resumes from the work dir's own
  checkpoint. A `Preempted` run propagates: re-running the study resumes it.
* One timing format: each run's `workdir/timing.json` is
  `{"seconds": S, "invocations": N}`, summed over the invocations that trained
  it, so a study resumed three times reports its real compute time.
* `provenance(command)`: the command, the code revision, the machine.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import platform
import subprocess
import time

from ptmjax import checkpoint as ckpt

log = logging.getLogger(__name__)
TIMING_FILE = 'timing.json'


def is_finished(workdir) -> bool:
  return (pathlib.Path(workdir) / 'final' / ckpt.MODEL_FILE).exists()


def train(config, workdir, name: str = '') -> pathlib.Path:
  """Trains (or resumes, or skips a finished) run; returns its final model folder."""
  from ptmjax.training import trainer

  workdir = pathlib.Path(workdir)
  name = name or workdir.name
  if is_finished(workdir):
    log.info('%s: done already (%s)', name, workdir / 'final')
    return workdir / 'final'
  log.info('%s: training in %s', name, workdir)
  start = time.time()
  try:
    trainer.train(config, workdir)
  finally:
    total = add_seconds(workdir, time.time() - start)
  log.info('%s: done, %.0f s in all', name, total)
  return workdir / 'final'


def add_seconds(workdir, seconds: float) -> float:
  """Adds one invocation's seconds to `workdir/timing.json`; returns the total."""
  path = pathlib.Path(workdir) / TIMING_FILE
  record = read_timing(workdir)
  record = {'seconds': record['seconds'] + seconds, 'invocations': record['invocations'] + 1}
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(record) + '\n')
  return record['seconds']


def read_timing(workdir) -> dict:
  path = pathlib.Path(workdir) / TIMING_FILE
  if not path.exists():
    return {'seconds': 0.0, 'invocations': 0}
  return json.loads(path.read_text())


def total_seconds(root) -> float:
  """Training seconds of every run below `root`, over all their invocations."""
  return sum(read_timing(f.parent)['seconds'] for f in pathlib.Path(root).rglob(TIMING_FILE))


def git_revision() -> str:
  """The revision of the ptmjax source that runs ('+changes' when modified), or 'unknown'
  (an installed package outside a checkout)."""
  here = pathlib.Path(__file__).parent
  try:
    rev = subprocess.run(
      ['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, check=True, cwd=here
    ).stdout.strip()
    dirty = subprocess.run(
      ['git', 'status', '--porcelain', '--untracked-files=no'],
      capture_output=True,
      text=True,
      cwd=here,
    ).stdout.strip()
    return rev + ('+changes' if dirty else '')
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def machine() -> str:
  import jax

  return (
    f'{platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__} '
    f'on {jax.devices()[0].platform}'
  )


def provenance(command: str) -> dict:
  import ptmjax

  return {
    'command': command,
    'git': git_revision(),
    'ptmjax': ptmjax.__version__,
    'machine': machine(),
    'started': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
  }
