"""The training loop: sharded == one device, preemption + resume == uninterrupted,
plain-Orbax reading of its checkpoints, NaN stop. Synthetic data (no files)."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments.configs import synthetic
from ptmjax.training import trainer

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(**mesh):
  c = synthetic.get_config('test')
  if mesh:
    c.sharding.mesh = mesh
  return c


def _losses(workdir):
  rows = [
    json.loads(line) for line in (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()
  ]
  return {r['step']: r['loss'] for r in rows if 'loss' in r}


def _params(workdir):
  path = pathlib.Path(workdir) / 'final' / 'params'
  ckptr = ocp.PyTreeCheckpointer()
  tree = ckptr.metadata(path).item_metadata.tree
  args = ocp.args.PyTreeRestore(
    restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  )
  return ckptr.restore(path, args=args)


@pytest.fixture(scope='module')
def one_device_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('one')
  c = _config(data=1)
  c.sharding.num_devices = 1
  trainer.train(c, workdir)
  return workdir


def test_sharded_losses_equal_one_device(one_device_run, tmp_path):
  """data x fsdp x tensor over 8 fake CPU devices: the same losses over 6 steps."""
  trainer.train(_config(data=2, fsdp=2, tensor=2), tmp_path)
  a, b = _losses(one_device_run), _losses(tmp_path)
  assert sorted(a) == list(range(1, 7)) and sorted(b) == sorted(a)
  # Reductions are split differently across devices: float32 rounding only.
  np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=2e-5)
  flat_a = jax.tree.leaves(_params(one_device_run))
  flat_b = jax.tree.leaves(_params(tmp_path))
  for x, y in zip(flat_a, flat_b, strict=True):
    np.testing.assert_allclose(x, y, atol=2e-5)


def test_preempted_run_resumes_to_the_uninterrupted_result(one_device_run, tmp_path):
  """SIGTERM mid-run saves a checkpoint; re-running the same command ends where an
  uninterrupted run ends: same losses, same final parameters."""
  workdir = tmp_path / 'run'
  cmd = [
    sys.executable, '-m', 'ptmjax.cli', 'train',
    '--config', str(REPO / 'experiments/configs/synthetic.py:test'),
    '--workdir', str(workdir),
    '--config.sharding.num_devices=1',
    '--config.sharding.mesh.data=1',
    '--config.optim.total_steps=6',
  ]  # fmt: skip
  env = {
    **os.environ,
    'XLA_FLAGS': '--xla_force_host_platform_device_count=8',
    'PTMJAX_STEP_DELAY_S': '1',
  }
  proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  metrics = workdir / 'metrics.jsonl'
  deadline = time.time() + 120
  while (
    proc.poll() is None
    and time.time() < deadline
    and not (metrics.exists() and metrics.read_text().count('\n') >= 2)
  ):
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=120)[0].decode()
  assert proc.returncode == 143, out
  interrupted_at = max(_losses(workdir))
  assert 2 <= interrupted_at < 6
  assert (workdir / 'checkpoints' / 'latest' / str(interrupted_at)).is_dir()

  env.pop('PTMJAX_STEP_DELAY_S')
  done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout + done.stderr
  resumed, reference = _losses(workdir), _losses(one_device_run)
  assert sorted(resumed) == list(range(1, 7))
  np.testing.assert_allclose(
    [resumed[s] for s in range(1, 7)], [reference[s] for s in range(1, 7)], rtol=1e-6
  )
  for x, y in zip(
    jax.tree.leaves(_params(workdir)), jax.tree.leaves(_params(one_device_run)), strict=True
  ):
    np.testing.assert_allclose(x, y, atol=1e-6)


def test_training_checkpoint_reads_with_plain_orbax(one_device_run):
  """A user's own code reads the training state with Orbax alone, as NumPy."""
  path = pathlib.Path(one_device_run) / 'checkpoints' / 'latest' / '6' / 'state'
  ckptr = ocp.PyTreeCheckpointer()
  tree = ckptr.metadata(path).item_metadata.tree
  args = ocp.args.PyTreeRestore(
    restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  )
  state = ckptr.restore(path, args=args)
  model = state['0'] if '0' in state else state[0]
  kernel = model['encoder']['layers']['0']['attention']['query']['kernel']
  assert isinstance(kernel, np.ndarray) and kernel.shape == (32, 4, 8)
  final = _params(one_device_run)['encoder']['layers']['0']['attention']['query']['kernel']
  np.testing.assert_array_equal(kernel, final)


def test_nan_loss_stops_naming_the_step(tmp_path):
  c = _config(data=1)
  c.sharding.num_devices = 1
  c.optim.lr = 1e30
  c.optim.grad_clip_norm = 0.0
  c.optim.warmup_steps = 0
  with pytest.raises(FloatingPointError, match=r'at step \d'):
    trainer.train(c, tmp_path)
