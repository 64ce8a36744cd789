"""What every study does with a training run: run it or resume it, time it, say where it came from.

* `train(config, workdir)`: skipped when `workdir/final` is a finished model,
  else `ptmjax.training.trainer.train`, which resumes from the work dir's own
  checkpoint. A `Preempted` run propagates: re-running the study resumes it.
* One timing format: each run's `workdir/timing.json` is
  `{"seconds": S, "invocations": N}`, summed over the invocations that trained
  it, so a study resumed three times reports its real compute time.
* `provenance(command)`: the command, the code revision, the machine.
* On several processes (`ptmjax compare --distributed`, one shared work dir): every
  process runs every stage and every analysis in the same order (Orbax saves and
  restores are collective), `sync` waits for all of them after each run, and
  `write_text` / `save_array` write on process 0 only, each file swapped in whole so
  another process never reads half of one.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pathlib
import platform
import subprocess
import time

from ptmjax import paths
from ptmjax.run_dir import RunDir

log = logging.getLogger(__name__)


def is_finished(workdir) -> bool:
  return RunDir.at(workdir).is_finished()


def is_primary() -> bool:
  """Process 0: the one that writes a study's files."""
  import jax

  return jax.process_index() == 0


def sync(name: str) -> None:
  """Waits until every process gets here (nothing on one process)."""
  import jax

  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(f'ptmjax: {name}')


def write_text(path, text: str) -> None:
  """Writes a file on process 0 only, whole: written beside it, then renamed over it
  (on gs:// an object is written whole anyway, and a rename is a copy)."""
  write_bytes(path, text.encode())


def write_bytes(path, data: bytes) -> None:
  """`write_text` for bytes."""
  if not is_primary():
    return
  path = paths.as_path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if paths.is_remote(path):
    path.write_bytes(data)
    return
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_bytes(data)
  tmp.replace(path)


def save_array(path, array) -> None:
  """`np.save` on process 0 only, whole (see `write_text`)."""
  import numpy as np

  buffer = io.BytesIO()
  np.save(buffer, array)
  write_bytes(path, buffer.getvalue())


def load_array(path):
  """`np.load` of a local or gs:// file."""
  import numpy as np

  with paths.as_path(path).open('rb') as f:
    return np.load(io.BytesIO(f.read()))


def train(config, workdir, name: str = '') -> pathlib.Path:
  """Trains (or resumes, or skips a finished) run; returns its final model folder.
  On several processes every one calls it, and it returns when all of them are done
  and process 0 has written the model folder's files."""
  from ptmjax.training import identity, trainer

  workdir = paths.as_path(workdir, 'work dir')
  rd = RunDir(workdir)
  name = name or workdir.name
  # A finished run is reused only when it was trained with these settings.
  identity.check_identity(config, rd)
  if rd.is_finished():
    log.info('%s: done already (%s)', name, rd.final)
    return rd.final
  log.info('%s: training in %s', name, workdir)
  before = read_timing(workdir)  # before process 0 adds this invocation
  start = time.time()
  try:
    trainer.train(config, workdir)
  finally:
    total = add_seconds(workdir, time.time() - start, before)
  # Process 0 writes model.json and timing.json after the collective save: the next
  # stage (or recipe choice) on another process must not read them before it has.
  sync(f'trained {workdir}')
  log.info('%s: done, %.0f s in all', name, total)
  return rd.final


def add_seconds(workdir, seconds: float, before: dict | None = None) -> float:
  """Adds one invocation's seconds to `workdir/timing.json` (process 0's clock: the
  processes of one run end together); returns the total."""
  record = before or read_timing(workdir)
  record = {'seconds': record['seconds'] + seconds, 'invocations': record['invocations'] + 1}
  write_text(RunDir.at(workdir).timing, json.dumps(record) + '\n')
  return record['seconds']


def read_timing(workdir) -> dict:
  path = RunDir.at(workdir).timing
  if not path.exists():
    return {'seconds': 0.0, 'invocations': 0}
  return json.loads(path.read_text())


def total_seconds(root, trained_here: bool = False) -> float:
  """Training seconds of every run below `root`, over all their invocations; with
  `trained_here`, only runs trained in `root` (not those the study archive restored)."""
  return sum(
    read_timing(f.parent)['seconds']
    for f in paths.files_named(root, RunDir.TIMING)
    if not (trained_here and (f.parent / RunDir.RESTORED).exists())
  )


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

  processes = f', {jax.process_count()} processes' if jax.process_count() > 1 else ''
  return (
    f'{platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__} '
    f'on {jax.devices()[0].platform}{processes}'
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
