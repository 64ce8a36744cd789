"""gs:// work dirs and model folders against a Cloud Storage emulator on 127.0.0.1
(gcp-storage-emulator, started here): train, SIGTERM, resume to the local run's losses
with the whole metrics history; predict from a gs:// model folder."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import slow_steps_env

from ptmjax.configs import synthetic
from ptmjax.training import trainer

# Read when gcsfs is imported: without it each bucket's type lookup stalls ~60 s.
os.environ['GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT'] = 'false'
pytest.importorskip('gcsfs')
pytest.importorskip('gcp_storage_emulator')

BUCKET = 'ptmjax-test'


@pytest.fixture(scope='module')
def gcs(tmp_path_factory):
  """The emulator's URL, with every client pointed at it (this process and children)."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  url = f'http://127.0.0.1:{port}'
  log = tmp_path_factory.mktemp('gcs') / 'emulator.log'
  proc = subprocess.Popen(
    [sys.executable, str(pathlib.Path(__file__).with_name('gcs_emulator.py')), 'start',
     '--host=127.0.0.1', f'--port={port}', '--in-memory', f'--default-bucket={BUCKET}'],
    stdout=log.open('w'), stderr=subprocess.STDOUT,
  )  # fmt: skip
  env = {
    'STORAGE_EMULATOR_HOST': url,  # gcsfs, google-cloud-storage (tensorboardX)
    'TENSORSTORE_GCS_HTTP_URL': url,  # Orbax's TensorStore
    'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'test',  # TensorStore: no credential lookup
    'CLOUD_STORAGE_EMULATOR_ENDPOINT': url,  # array_record (TFDS data sources)
    'GOOGLE_CLOUD_PROJECT': 'test',
  }
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    deadline = time.time() + 60
    while True:
      try:
        socket.create_connection(('127.0.0.1', port), timeout=1).close()
        break
      except OSError:
        assert proc.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.2)
    yield url
  finally:
    proc.terminate()
    proc.wait(timeout=30)
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


def _fs():
  import gcsfs

  return gcsfs.GCSFileSystem(token='anon', project='test', skip_instance_cache=True)


def _losses(text):
  rows = [json.loads(x) for x in text.splitlines() if x.strip()]
  return [(r['step'], r['loss']) for r in rows if 'loss' in r]


def _cmd(workdir, *extra):
  return [
    sys.executable, '-m', 'ptmjax.cli', 'train', '--config', 'synthetic:test',
    '--workdir', workdir, '--config.sharding.num_devices=1', '--config.sharding.mesh.data=1',
    '--config.checkpoint.every_steps=2', *extra,
  ]  # fmt: skip


@pytest.fixture(scope='module')
def local_run(tmp_path_factory):
  c = synthetic.get_config('test')
  c.sharding.num_devices = 1
  c.sharding.mesh.data = 1
  c.checkpoint.every_steps = 2
  workdir = tmp_path_factory.mktemp('local')
  trainer.train(c, workdir)
  return workdir


@pytest.mark.slow  # ~1 min (issue 26): local preemption stays in the default suite
def test_gs_workdir_preempted_and_resumed_equals_the_local_run(gcs, local_run, tmp_path):
  fs = _fs()
  workdir = f'gs://{BUCKET}/runs/synthetic'
  env = slow_steps_env(0.5)
  proc = subprocess.Popen(_cmd(workdir), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  deadline = time.time() + 180
  metrics = f'{BUCKET}/runs/synthetic/metrics.jsonl'
  while proc.poll() is None and time.time() < deadline:
    fs.invalidate_cache()
    if fs.exists(metrics) and len(_losses(fs.cat(metrics).decode())) >= 2:
      break
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=120)[0].decode()
  assert proc.returncode == 143, out[-3000:]
  assert not os.path.exists('gs:'), 'written to a local folder named gs:'
  fs.invalidate_cache()
  stopped = max(s for s, _ in _losses(fs.cat(metrics).decode()))
  assert 2 <= stopped < 6

  done = subprocess.run(_cmd(workdir), capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
  fs.invalidate_cache()
  remote = _losses(fs.cat(metrics).decode())
  local = _losses((local_run / 'metrics.jsonl').read_text())
  # The whole history, each step once (an append through gcsfs used to replace it).
  assert [s for s, _ in remote] == list(range(1, 7))
  np.testing.assert_allclose([v for _, v in remote], [v for _, v in local], rtol=1e-6)
  assert fs.exists(f'{BUCKET}/runs/synthetic/final/ptmjax_model.json')
  assert fs.ls(f'{BUCKET}/runs/synthetic/tensorboard')


def test_predict_from_a_gs_model_folder(gcs, local_run, tmp_path):
  from ptmjax import cli

  fs = _fs()
  fs.put(str(local_run / 'final'), f'{BUCKET}/models/final', recursive=True)
  fasta = tmp_path / 'p.fasta'
  fasta.write_text('>P1\nMKSPEELRRSSPTYKLLS\n>P2\nMSTPKRSYTSLKEEAS\n')
  local_out, gs_out = tmp_path / 'local.tsv', tmp_path / 'gs.tsv'
  assert cli.main(['predict', '--checkpoint', str(local_run / 'final'), '--fasta', str(fasta),
                   '--out', str(local_out)]) == 0  # fmt: skip
  assert cli.main(['predict', '--checkpoint', f'gs://{BUCKET}/models/final', '--fasta',
                   str(fasta), '--out', str(gs_out)]) == 0  # fmt: skip
  assert gs_out.read_text() == local_out.read_text()


def test_a_dataset_copied_to_gs_reads_like_the_local_build(gcs, tmp_path):
  """Built locally (TFDS cannot build into gs://), copied to the bucket, read back by
  `sources.load` from the gs:// data dir (TFDS's array_record reader): the same records."""
  from conftest import DUMMY_YAAM

  from ptmjax.data import sources

  sources.build('yaam', DUMMY_YAAM, tmp_path / 'tfds')
  fs = _fs()
  fs.put(str(tmp_path / 'tfds'), f'{BUCKET}/tfds', recursive=True)
  local = sources.load('yaam', tmp_path / 'tfds')
  remote = sources.load('yaam', f'gs://{BUCKET}/tfds')
  assert set(remote) == set(local)
  for split in local:
    assert len(remote[split]) == len(local[split]) > 0
    a, b = local[split][len(local[split]) - 1], remote[split][len(local[split]) - 1]
    assert a['id'] == b['id'] and a['sequence'] == b['sequence']
    np.testing.assert_array_equal(a['labels'], b['labels'])


@pytest.mark.slow  # ~3 min quiet (two compare invocations against the emulator)
def test_compare_in_a_gs_work_dir_gives_the_local_numbers(gcs, quickstart_dir):
  """`ptmjax compare` with its work dir on gs://: stages, score cache, plots and report
  in the bucket (nothing in a local folder named gs:), the local run's numbers; run
  again, every stage is found done and the scores come from the bucket's cache."""
  from conftest import QUICK, json_numbers

  workdir = f'gs://{BUCKET}/compare'
  # A process of its own, as a user runs it: tensorboardX's GCS writer uploads again
  # when garbage-collected, which at this process's exit would find the emulator gone.
  cmd = [sys.executable, '-m', 'ptmjax.cli', 'compare', '--config', 'compare:quickstart',
         '--workdir', workdir, *QUICK]  # fmt: skip
  run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
  assert not os.path.exists('gs:'), 'written to a local folder named gs:'
  fs = _fs()
  results = json.loads(fs.cat(f'{BUCKET}/compare/report/results.json'))
  local = json.loads((quickstart_dir / 'report' / 'results.json').read_text())
  got, want = json_numbers(results['results']), json_numbers(local['results'])
  assert got.keys() == want.keys() and len(want) > 100
  np.testing.assert_allclose([got[k] for k in want], list(want.values()), atol=1e-5)
  assert fs.cat(f'{BUCKET}/compare/report/roc_pr.png')[:4] == b'\x89PNG'
  scores = fs.ls(f'{BUCKET}/compare/scores')
  assert len(scores) == 5  # 2 arms x 2 splits + the initial encoder on test

  run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
  assert 'training in' not in run.stderr  # resumed: every stage found done
  fs.invalidate_cache()
  assert sorted(fs.ls(f'{BUCKET}/compare/scores')) == sorted(scores)
  again = json.loads(fs.cat(f'{BUCKET}/compare/report/results.json'))
  assert json_numbers(again['results']) == got
  timing = json.loads(fs.cat(f'{BUCKET}/compare/seed0/two/timing.json'))
  assert timing['invocations'] == 1


@pytest.mark.slow  # ~2 min: two processes compile and save against the emulator
def test_two_processes_in_a_gs_work_dir_equal_one_device(gcs, local_run):
  """`ptmjax train` on two processes (4 CPU devices each, a 2x2x2 mesh) with the work
  dir on gs://, evaluation and a checkpoint every 2 steps: the local one-device run's
  losses, and one final model folder in the bucket."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}
  workdir = f'gs://{BUCKET}/runs/two'
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        '-m',
        'ptmjax.cli',
        'train',
        '--config',
        'synthetic:test',
        '--workdir',
        workdir,
        '--coordinator-address',
        f'127.0.0.1:{port}',
        '--num-processes',
        '2',
        '--process-id',
        str(i),
        '--config.sharding.mesh.data=2',
        '--config.sharding.mesh.fsdp=2',
        '--config.sharding.mesh.tensor=2',
        '--config.eval.every_steps=2',
        '--config.eval.max_proteins=4',
        '--config.checkpoint.every_steps=2',
      ],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
    )  # fmt: skip
    for i in range(2)
  ]
  try:
    outs = [p.communicate(timeout=400)[0].decode() for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, out in zip(procs, outs, strict=True):
    assert p.returncode == 0, out[-3000:]
  fs = _fs()
  remote = _losses(fs.cat(f'{BUCKET}/runs/two/metrics.jsonl').decode())
  local = _losses((local_run / 'metrics.jsonl').read_text())
  assert [s for s, _ in remote] == list(range(1, 7))
  np.testing.assert_allclose([v for _, v in remote], [v for _, v in local], rtol=2e-5)
  assert fs.exists(f'{BUCKET}/runs/two/final/ptmjax_model.json')
