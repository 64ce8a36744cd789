"""Test set-up: 8 fake CPU devices, one XLA compilation cache, and where the real shared
data lives."""

import atexit
import os
import pathlib
import shutil
import tempfile

# Before JAX is imported anywhere: sharding tests get a real 2x4 CPU mesh.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# One persistent XLA compilation cache for the run, the `ptmjax` subprocesses included
# (they inherit the environment): the suite's ~50 short trainings compile the same steps,
# which was most of its time. Fresh per run (measurements stay honest), removed after.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _cache = tempfile.mkdtemp(prefix='ptmjax-test-xla-cache-')
  atexit.register(shutil.rmtree, _cache, True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
# MMseqs2 results (`data.homology`'s cache) likewise: fresh per run and shared by its
# builds, never the user's ~/.cache, where a warm cache would hide MMseqs2's cost.
if 'PTMJAX_CACHE_DIR' not in os.environ:
  _mmseqs = tempfile.mkdtemp(prefix='ptmjax-test-cache-')
  atexit.register(shutil.rmtree, _mmseqs, True)
  os.environ['PTMJAX_CACHE_DIR'] = _mmseqs
# Run inside a SLURM job or an MPI launch, each `ptmjax train` the tests start would join
# that job's cluster (`ptmjax.cli.detected_cluster`): the tests run alone.
for _k in [k for k in os.environ if k.startswith(('SLURM_', 'OMPI_', 'PMI_'))]:
  del os.environ[_k]

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
BUILDERS = REPO / 'ptmjax' / 'data' / 'builders'
DUMMY_YAAM = BUILDERS / 'yaam' / 'dummy_data'
DUMMY_PTMDB = BUILDERS / 'ptmdb' / 'dummy_data'


SHARED_DATA = pathlib.Path(os.environ.get('PTMJAX_SHARED_DATA', REPO.parent / 'shared' / 'data'))
# Fixtures that read the real data: a test using any of them is marked `shared_data`.
SHARED_FIXTURES = ('shared_data', 'real_tfds')


def pytest_collection_modifyitems(config, items):
  """Marks tests that need ../shared/data and skips them, with the reason, where it is
  absent; with PTMJAX_REQUIRE_SHARED_DATA=1 (CI) its absence is a failure instead."""
  present = (SHARED_DATA / 'yaam').is_dir()
  required = os.environ.get('PTMJAX_REQUIRE_SHARED_DATA') == '1'
  reason = (
    f'needs the real data at {SHARED_DATA} (../shared/data beside the repository, '
    'or set PTMJAX_SHARED_DATA)'
  )
  for item in items:
    if any(f in getattr(item, 'fixturenames', ()) for f in SHARED_FIXTURES):
      item.add_marker(pytest.mark.shared_data)
    if item.get_closest_marker('shared_data') and not present and not required:
      item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope='session')
def shared_data() -> pathlib.Path:
  """`../shared/data` beside the repo (or $PTMJAX_SHARED_DATA); CI has it too."""
  if not (SHARED_DATA / 'yaam').is_dir():
    pytest.fail(f'real data not found at {SHARED_DATA}; set PTMJAX_SHARED_DATA')
  return SHARED_DATA


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown without it
def pytest_xdist_auto_num_workers(config):
  """`-n auto` (pyproject's addopts): one worker a core, at most 4. Each worker is a JAX
  process with 8 fake devices; more than 4 cost memory and gain little here."""
  return max(1, min(os.cpu_count() or 1, 4))


def built_once(tmp_path_factory, name: str, build) -> pathlib.Path:
  """A folder `build(folder)` fills once for the whole run: with pytest-xdist the
  workers share it (the first builds under a file lock, the others wait and reuse it),
  so a session fixture such as the real-data build is not paid once per worker."""
  if not os.environ.get('PYTEST_XDIST_WORKER'):
    folder = tmp_path_factory.mktemp(name)
    build(folder)
    return folder
  import filelock

  folder = tmp_path_factory.getbasetemp().parent / name  # the run's root, shared by workers
  with filelock.FileLock(f'{folder}.lock'):
    done = folder.with_name(f'{name}.done')
    if not done.exists():
      shutil.rmtree(folder, ignore_errors=True)  # a half-built one from a failed worker
      folder.mkdir()
      build(folder)
      done.touch()
  return folder


@pytest.fixture(scope='session')
def real_tfds(shared_data, tmp_path_factory):
  """YAAM and ptmDB/all built once from the real shared files: (data_dir, yaam, ptmdb builders)."""
  from ptmjax.data import sources

  def build(data_dir):
    sources.build('yaam', shared_data, data_dir)
    sources.build('ptmdb', shared_data / 'multiorganism', data_dir, 'all')

  data_dir = built_once(tmp_path_factory, 'tfds', build)
  # Built already: these reuse it (the inputs' checksums match its record).
  yaam = sources.build('yaam', shared_data, data_dir)
  ptmdb = sources.build('ptmdb', shared_data / 'multiorganism', data_dir, 'all')
  return data_dir, yaam, ptmdb


# --- tiny Hugging Face checkpoints, made here (nothing can be downloaded) -----------
def _perturb(model, seed):
  """Random LayerNorm/bias values, so a conversion that dropped them would show."""
  import torch

  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'LayerNorm' in name or 'layer_norm' in name or name.endswith('bias'):
        p.add_(0.1 * torch.randn(p.shape, generator=g))
  return model


def make_hf_checkpoint(path, family: str, masked_lm: bool = True, **config):
  """Saves a random tiny EsmForMaskedLM/EsmModel or BertForMaskedLM/BertModel with its vocab.txt."""
  import torch
  import transformers

  from ptmjax.data import tokenizer as tok

  torch.manual_seed(0)
  if family == 'esm':
    t = tok.esm()
    kwargs = dict(
      vocab_size=t.vocab_size,
      hidden_size=32,
      num_hidden_layers=2,
      num_attention_heads=4,
      intermediate_size=48,
      max_position_embeddings=1026,
      position_embedding_type='rotary',
      token_dropout=True,
      mask_token_id=t.mask_id,
      pad_token_id=t.pad_id,
      emb_layer_norm_before=False,
      layer_norm_eps=1e-5,
      hidden_dropout_prob=0.0,
      attention_probs_dropout_prob=0.0,
    )
    hf_config = transformers.EsmConfig(**{**kwargs, **config})
    cls = transformers.EsmForMaskedLM if masked_lm else transformers.EsmModel
  else:
    t = tok.protbert()
    kwargs = dict(
      vocab_size=t.vocab_size,
      hidden_size=32,
      num_hidden_layers=2,
      num_attention_heads=4,
      intermediate_size=48,
      max_position_embeddings=256,
      pad_token_id=t.pad_id,
    )
    hf_config = transformers.BertConfig(**{**kwargs, **config})
    cls = transformers.BertForMaskedLM if masked_lm else transformers.BertModel
  model = _perturb(cls(hf_config), 1).eval()
  model.save_pretrained(path)
  t.save_vocab(pathlib.Path(path) / 'vocab.txt')
  return model


@pytest.fixture(scope='session')
def hf_checkpoints(tmp_path_factory):
  """{name: (folder, torch model)} for esm_mlm, esm_base, bert_mlm."""
  root = tmp_path_factory.mktemp('hf')
  out = {}
  for name, family, mlm in (
    ('esm_mlm', 'esm', True),
    ('esm_base', 'esm', False),
    ('bert_mlm', 'bert', True),
  ):
    out[name] = (root / name, make_hf_checkpoint(root / name, family, mlm))
  return out


def slow_steps_env(seconds: float, env=None) -> dict:
  """The environment of a subprocess whose every training step waits `seconds` first
  (tests/slow_steps/sitecustomize.py delays the trainer's batches from outside)."""
  env = {**os.environ, **(env or {})}
  path = [str(REPO / 'tests' / 'slow_steps'), env.get('PYTHONPATH', '')]
  return {**env, 'PYTHONPATH': os.pathsep.join(p for p in path if p),
          'PTMJAX_TEST_BATCH_DELAY_S': str(seconds)}  # fmt: skip


def slow_steps(monkeypatch, seconds: float) -> None:
  """The same in this process: each batch the trainer draws waits `seconds`."""
  import time

  from ptmjax.data import pipeline

  real = pipeline.Iterator.__next__

  def slow(self):
    time.sleep(seconds)
    return real(self)

  monkeypatch.setattr(pipeline.Iterator, '__next__', slow)


def interrupt_training(cmd, workdir, signum, *, after_rows: int = 2, env=None):
  """Runs a `ptmjax train` command slowed to a step a second, sends `signum` once
  `after_rows` metrics rows are written, and returns (exit code, output)."""
  import subprocess
  import time

  env = slow_steps_env(1, env)
  proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  metrics = pathlib.Path(workdir) / 'metrics.jsonl'
  deadline = time.time() + 120
  while (
    proc.poll() is None
    and time.time() < deadline
    and not (metrics.exists() and metrics.read_text().count('\n') >= after_rows)
  ):
    time.sleep(0.1)
  proc.send_signal(signum)
  out = proc.communicate(timeout=120)[0]  # reads while waiting: a full pipe cannot block it
  return proc.returncode, out.decode()


# `ptmjax quickstart` with every stage cut to a few steps (the full one takes minutes).
QUICK = ['--config.seeds=0', '--config.report.bootstrap=20'] + [
  f'--config.{stage}.{key}'
  for stage in ('stage1', 'stage2', 'single')
  for key in (
    'optim.total_steps=4',
    'optim.warmup_steps=1',
    'eval.every_steps=2',
    'log_every_steps=2',
  )
]


@pytest.fixture(scope='session')
def quickstart_dir(tmp_path_factory):
  """`ptmjax quickstart` (compare:quickstart, then the final model copied out), shrunk:
  the reference the distributed and gs:// studies are compared with."""
  from ptmjax import cli

  def build(workdir):
    # With a study archive (tests/test_study_archive.py restores it elsewhere).
    store = f'--config.archive_dir={workdir / "archive"}'
    assert cli.main(['quickstart', '--workdir', str(workdir), *QUICK, store]) == 0

  return built_once(tmp_path_factory, 'quickstart', build)


def json_numbers(tree, path=''):
  """{path: value} of every float in a JSON tree."""
  if isinstance(tree, dict):
    return {
      k: v for key, sub in tree.items() for k, v in json_numbers(sub, f'{path}/{key}').items()
    }
  if isinstance(tree, list):
    return {
      k: v for i, sub in enumerate(tree) for k, v in json_numbers(sub, f'{path}[{i}]').items()
    }
  return {path: tree} if isinstance(tree, float) else {}
