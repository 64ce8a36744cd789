"""The training loop: sharded == one device, preemption + resume == uninterrupted,
plain-Orbax reading of its checkpoints, NaN stop. Synthetic data (no files)."""

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import interrupt_training, slow_steps, slow_steps_env

from ptmjax.configs import synthetic
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


def _logged_steps(workdir):
  """Steps in metrics.jsonl order: a resumed run that restarted from scratch repeats some."""
  lines = (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()
  return [json.loads(line)['step'] for line in lines if 'loss' in json.loads(line)]


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
    '--config', str(REPO / 'ptmjax/configs/synthetic.py:test'),
    '--workdir', str(workdir),
    '--config.sharding.num_devices=1',
    '--config.sharding.mesh.data=1',
    '--config.optim.total_steps=6',
  ]  # fmt: skip
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  returncode, out = interrupt_training(cmd, workdir, signal.SIGTERM, env=env)
  assert returncode == 143, out
  interrupted_at = max(_losses(workdir))
  assert 2 <= interrupted_at < 6
  assert (workdir / 'checkpoints' / 'latest' / str(interrupted_at)).is_dir()

  done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout + done.stderr
  resumed, reference = _losses(workdir), _losses(one_device_run)
  assert _logged_steps(workdir) == list(range(1, 7))
  np.testing.assert_allclose(
    [resumed[s] for s in range(1, 7)], [reference[s] for s in range(1, 7)], rtol=1e-6
  )
  for x, y in zip(
    jax.tree.leaves(_params(workdir)), jax.tree.leaves(_params(one_device_run)), strict=True
  ):
    np.testing.assert_allclose(x, y, atol=1e-6)


def test_sigterm_on_a_checkpoint_step_exits_143(tmp_path):
  """Every step a checkpoint step: the signal's save finds its step saved already and
  must not save it twice (Orbax's StepAlreadyExistsError made this exit 1)."""
  workdir = tmp_path / 'run'
  cmd = [
    sys.executable, '-m', 'ptmjax.cli', 'train', '--config', 'synthetic:test',
    '--workdir', str(workdir), '--config.sharding.num_devices=1',
    '--config.sharding.mesh.data=1', '--config.checkpoint.every_steps=1',
  ]  # fmt: skip
  returncode, out = interrupt_training(cmd, workdir, signal.SIGTERM)
  assert returncode == 143, out[-3000:]
  assert 'StepAlreadyExists' not in out


def test_training_checkpoint_reads_with_plain_orbax(one_device_run):
  """A user's own code reads the training state with Orbax alone, as NumPy."""
  path = pathlib.Path(one_device_run) / 'checkpoints' / 'latest' / '6' / 'state'
  ckptr = ocp.PyTreeCheckpointer()
  tree = ckptr.metadata(path).item_metadata.tree
  args = ocp.args.PyTreeRestore(
    restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  )
  state = ckptr.restore(path, args=args)
  kernel = state['model']['encoder']['layers']['0']['attention']['query']['kernel']
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


def test_restore_onto_a_different_mesh(one_device_run, tmp_path, monkeypatch):
  """Preempted on one device, resumed on a 2x2x2 mesh: the uninterrupted result."""
  c = _config(data=1)
  c.sharding.num_devices = 1
  slow_steps(monkeypatch, 0.3)
  metrics = tmp_path / 'metrics.jsonl'

  def preempt_after_two_steps():
    while not (metrics.exists() and metrics.read_text().count('\n') >= 2):
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)  # handled in the main thread, by the trainer

  killer = threading.Thread(target=preempt_after_two_steps, daemon=True)
  killer.start()
  with pytest.raises(trainer.Preempted):
    trainer.train(c, tmp_path)
  killer.join(timeout=10)
  stopped = max(_losses(tmp_path))
  assert 2 <= stopped < 6

  monkeypatch.undo()  # full speed again
  trainer.train(_config(data=2, fsdp=2, tensor=2), tmp_path)
  resumed, reference = _losses(tmp_path), _losses(one_device_run)
  assert _logged_steps(tmp_path) == list(range(1, 7))
  np.testing.assert_allclose(
    [resumed[s] for s in range(1, 7)], [reference[s] for s in range(1, 7)], rtol=2e-5
  )
  for x, y in zip(
    jax.tree.leaves(_params(tmp_path)), jax.tree.leaves(_params(one_device_run)), strict=True
  ):
    np.testing.assert_allclose(x, y, atol=2e-5)


def _two_processes(workdir, *overrides, env=None, slurm_job=None):
  """Two `ptmjax train` processes on 127.0.0.1 with 4 fake CPU devices each: one 2x2x2
  mesh over 8 devices, gloo collectives. With `slurm_job`, no flags: the environment
  a SLURM step with two tasks gives its processes."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = {**os.environ, **(env or {}), 'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}

  def flags(i):
    if slurm_job is None:
      return ['--coordinator-address', f'127.0.0.1:{port}', '--num-processes', '2',
              '--process-id', str(i)]  # fmt: skip
    env_i = dict(SLURM_JOB_ID=str(slurm_job), SLURM_STEP_NODELIST='127.0.0.1', SLURM_NTASKS='2',
                 SLURM_PROCID=str(i), SLURM_LOCALID=str(i))  # fmt: skip
    return env_i

  return [
    subprocess.Popen(
      [
        sys.executable, '-m', 'ptmjax.cli', 'train',
        '--config', str(REPO / 'ptmjax/configs/synthetic.py:test'),
        '--workdir', str(workdir),
        *(flags(i) if slurm_job is None else ()),
        '--config.sharding.mesh.data=2', '--config.sharding.mesh.fsdp=2',
        '--config.sharding.mesh.tensor=2', *overrides,
      ],
      env={**env, **(flags(i) if slurm_job is not None else {})},
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    for i in range(2)
  ]  # fmt: skip


def _finish(procs, timeout=240):
  try:
    return [p.communicate(timeout=timeout)[0].decode() for p in procs]
  finally:
    for p in procs:
      p.kill()


def test_two_processes_preempted_on_one_host_resume_to_one_device(one_device_run, tmp_path):
  """SIGTERM to one of two processes: both save the same step and exit 143 (JAX's
  preemption sync point; a per-host handler left the other hanging in a collective).
  Re-run on both: the single-device losses and parameters. Evaluation and a checkpoint
  on every step: `best` and `latest` save the same steps, whose barriers once clashed."""
  every_step = ('--config.eval.every_steps=1', '--config.eval.max_proteins=4',
                '--config.checkpoint.every_steps=1')  # fmt: skip
  procs = _two_processes(tmp_path, *every_step, env=slow_steps_env(1))
  metrics = tmp_path / 'metrics.jsonl'
  deadline = time.time() + 180
  while time.time() < deadline and len(_losses(tmp_path) if metrics.exists() else ()) < 2:
    assert all(p.poll() is None for p in procs), _finish(procs)
    time.sleep(0.1)
  procs[1].send_signal(signal.SIGTERM)
  outs = _finish(procs)
  for p, out in zip(procs, outs, strict=True):
    assert p.returncode == 143, out[-3000:]
  saved = [re.search(r'preempted: signal 15 at step (\d+)', out) for out in outs]
  assert saved[0] and saved[1] and saved[0][1] == saved[1][1], outs
  step = int(saved[0][1])
  assert 2 <= step < 6
  assert sorted(int(d.name) for d in (tmp_path / 'checkpoints' / 'latest').iterdir()) == [step]

  procs = _two_processes(tmp_path, *every_step)
  outs = _finish(procs)
  for p, out in zip(procs, outs, strict=True):
    assert p.returncode == 0, out[-3000:]
    assert 'already ongoing' not in out
  got, reference = _losses(tmp_path), _losses(one_device_run)
  assert _logged_steps(tmp_path) == list(range(1, 7))
  np.testing.assert_allclose(
    [got[s] for s in range(1, 7)], [reference[s] for s in range(1, 7)], rtol=2e-5
  )
  for x, y in zip(
    jax.tree.leaves(_params(tmp_path)), jax.tree.leaves(_params(one_device_run)), strict=True
  ):
    np.testing.assert_allclose(x, y, atol=2e-5)


@pytest.mark.slow  # default suite time (issue 26): explicit multi-process flags stay
def test_a_slurm_step_joins_without_flags(one_device_run, tmp_path):
  """Two tasks of a SLURM step (its environment variables, no --coordinator flags): JAX's
  cluster detection joins them into one 8-device mesh; the one-device losses."""
  # SLURM's coordinator port is derived from the job id (61440 + id mod 4096): a job id
  # whose port is free here.
  job = None
  for candidate in np.random.default_rng().permutation(2**12)[:50]:
    with socket.socket() as s:
      try:
        s.bind(('127.0.0.1', 65535 - 2**12 + 1 + int(candidate)))
      except OSError:
        continue
    job = int(candidate)
    break
  assert job is not None, 'no free port in 61440-65535'
  procs = _two_processes(tmp_path, slurm_job=job)
  outs = _finish(procs)
  for p, out in zip(procs, outs, strict=True):
    assert p.returncode == 0, out[-3000:]
    assert 'slurm cluster with 2 processes detected' in out
  got, reference = _losses(tmp_path), _losses(one_device_run)
  np.testing.assert_allclose(
    [got[s] for s in range(1, 7)], [reference[s] for s in range(1, 7)], rtol=2e-5
  )


def test_no_cluster_no_distributed(monkeypatch):
  from ptmjax import cli

  for k in [k for k in os.environ if k.startswith(('SLURM_', 'OMPI_', 'TPU_', 'MEGASCALE'))]:
    monkeypatch.delenv(k)
  assert cli.detected_cluster() is None
  monkeypatch.setenv('SLURM_JOB_ID', '7')
  for k, v in dict(SLURM_STEP_NODELIST='n1', SLURM_NTASKS='1', SLURM_PROCID='0').items():
    monkeypatch.setenv(k, v)
  monkeypatch.setenv('SLURM_LOCALID', '0')
  assert cli.detected_cluster() is None  # one task (an interactive shell): not a cluster
  monkeypatch.setenv('SLURM_NTASKS', '4')
  assert cli.detected_cluster() == ('slurm', 4)


def test_docs_plain_orbax_snippet_runs_as_written(one_device_run, monkeypatch):
  """The docs' 'Checkpoints in your own code' block (docs/checkpoints.md), run as written
  on a real work dir, with the relative paths it shows (from the work dir's parent)."""
  text = (REPO / 'docs' / 'checkpoints.md').read_text()
  block = text.split('<!-- plain-orbax -->')[1].split('```python')[1].split('```')[0]
  monkeypatch.chdir(pathlib.Path(one_device_run).parent)
  block = block.replace('runs/yaam_tiny', pathlib.Path(one_device_run).name)
  block = block.replace('/latest/300/', '/latest/6/')
  scope = {}
  exec(compile(block, 'docs/checkpoints.md', 'exec'), scope)  # noqa: S102
  kernel = scope['params']['encoder']['layers']['0']['attention']['query']['kernel']
  np.testing.assert_array_equal(
    kernel, scope['final']['encoder']['layers']['0']['attention']['query']['kernel']
  )
  assert set(scope['adam']) and isinstance(kernel, np.ndarray)


def test_run_stopped_between_an_evaluation_and_its_latest_save_finishes(one_device_run, tmp_path):
  """Killed after `best` saved an evaluation but before `latest` reached that step: the
  re-run trains that step again and must not save the evaluation twice (Orbax raised
  StepAlreadyExistsError and the run never finished); it ends as the uninterrupted one."""
  c = _config(data=1)
  c.sharding.num_devices = 1
  c.eval.every_steps = 3
  trainer.train(c, tmp_path)
  best = sorted(
    int(p.name) for p in (tmp_path / 'checkpoints' / 'best').iterdir() if p.name.isdigit()
  )
  assert 6 in best
  for p in (tmp_path / 'checkpoints' / 'latest').iterdir():
    shutil.rmtree(p)
  shutil.rmtree(tmp_path / 'final')
  trainer.train(c, tmp_path)
  for x, y in zip(
    jax.tree.leaves(_params(tmp_path)), jax.tree.leaves(_params(one_device_run)), strict=True
  ):
    np.testing.assert_allclose(x, y, atol=1e-6)
