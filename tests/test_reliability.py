"""Failure behaviour (issue 17): re-runs that must not lose results, saves that must not
leave half-written folders. Each test failed on the code before its fix."""

import json

import jax
import numpy as np
import pytest

from ptmjax import checkpoint
from ptmjax.configs import synthetic
from ptmjax.data import tokenizer as tok
from ptmjax.models import ModelConfig, create_model
from ptmjax.training import trainer


def _config():
  c = synthetic.get_config('test')
  c.sharding.num_devices = 1
  c.sharding.mesh = {'data': 1}
  c.eval.update(every_steps=6, max_proteins=10)
  return c


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """One finished `_config()` run for the tests that only need a trained model folder."""
  run = tmp_path_factory.mktemp('finished') / 'run'
  trainer.train(_config(), run)
  return run


def _copy_run(finished, tmp_path):
  """A private copy of the finished run (tests corrupt or reuse it)."""
  import shutil

  run = tmp_path / 'run'
  shutil.copytree(finished, run)
  return run


def test_rerunning_a_finished_run_keeps_its_results(tmp_path):
  """A finished `ptmjax train` run again is a no-op that returns the stored metrics; it
  used to rewrite final/ with no thresholds and no metrics (`predict --calls` then failed)."""
  first = trainer.train(_config(), tmp_path)
  meta = checkpoint.read_meta(tmp_path / 'final')
  assert meta['info']['thresholds'] and first
  lines = (tmp_path / 'metrics.jsonl').read_text()
  again = trainer.train(_config(), tmp_path)
  assert again == pytest.approx(first)
  assert checkpoint.read_meta(tmp_path / 'final') == meta
  assert (tmp_path / 'metrics.jsonl').read_text() == lines
  # Settings that change nothing trained (logging) reuse it.
  c = _config()
  c.log_every_steps = 3
  assert trainer.train(c, tmp_path) == pytest.approx(first)


def test_interrupted_model_save_leaves_the_previous_folder_whole(tmp_path, monkeypatch):
  """A save that fails after writing the parameters (a crash, a full disk) must not leave
  new parameters under the previous folder's description."""
  cfg = ModelConfig(num_layers=1, embed_dim=16, num_heads=2, mlp_dim=32)
  before = create_model(cfg, seed=0)
  checkpoint.save_model(tmp_path / 'm', before, tok.esm(), {'thresholds': {'a': 0.5}})

  def fail(_):
    raise OSError('disk full')

  monkeypatch.setattr(checkpoint, 'tokenizer_to_dict', fail)  # after the params are written
  with pytest.raises(OSError, match='disk full'):
    checkpoint.save_model(tmp_path / 'm', create_model(cfg, seed=1), tok.esm(), {})
  monkeypatch.undo()
  model, _, meta = checkpoint.load_model(tmp_path / 'm')
  assert meta['info']['thresholds'] == {'a': 0.5}
  for a, b in zip(
    jax.tree.leaves(nnx_params(model)), jax.tree.leaves(nnx_params(before)), strict=True
  ):
    np.testing.assert_array_equal(a, b)
  # The next save succeeds and replaces it.
  checkpoint.save_model(tmp_path / 'm', create_model(cfg, seed=1), tok.esm(), {'x': 1})
  assert checkpoint.read_meta(tmp_path / 'm')['info'] == {'x': 1}
  assert not (tmp_path / 'm.tmp').exists() and not (tmp_path / 'm.old').exists()


def nnx_params(model):
  from flax import nnx

  return nnx.state(model, nnx.Param).to_pure_dict()


def test_finished_check_reads_the_stored_config(tmp_path):
  assert trainer.finished_result(_config(), tmp_path) is None  # nothing there yet
  (tmp_path / 'final').mkdir()
  (tmp_path / 'final' / checkpoint.MODEL_FILE).write_text(
    json.dumps({'format': checkpoint.FORMAT, 'model': {}, 'tokenizer': {}, 'info': {}})
  )
  assert trainer.finished_result(_config(), tmp_path) is None  # no step, no config


def _corrupt_largest_param_file(folder):
  files = [p for p in (folder / 'params').rglob('*') if p.is_file()]
  target = max(files, key=lambda p: p.stat().st_size)
  data = bytearray(target.read_bytes())
  mid = len(data) // 2
  data[mid : mid + 200] = b'\xff' * 200  # 200 flipped bytes: NaN floats, if they decode
  target.write_bytes(bytes(data))


def test_corrupted_weights_are_an_error_not_na(finished, tmp_path):
  """200 flipped bytes in a params file: `predict` used to exit 0 with every score `NA`
  (NaN written as "not a candidate"). Now loading fails with the folder named, exit 2."""
  from ptmjax import cli

  run = _copy_run(finished, tmp_path)
  (tmp_path / 'p.fasta').write_text('>P1\nMKSPEELRRSSTKGK\n')
  args = ['predict', '--checkpoint', str(run / 'final'), '--fasta', str(tmp_path / 'p.fasta')]
  assert cli.main([*args, '--out', str(tmp_path / 'ok.tsv')]) == 0
  _corrupt_largest_param_file(run / 'final')
  with pytest.raises(checkpoint.ModelFolderError, match='checksum|cannot be read'):
    checkpoint.load_model(run / 'final')
  assert cli.main([*args, '--out', str(tmp_path / 'bad.tsv')]) == 2
  assert not (tmp_path / 'bad.tsv').exists()


def test_nan_outputs_are_an_error(finished, tmp_path):
  """A model that outputs NaN (weights from before the checksum, or a numerical blow-up):
  predict refuses instead of writing NA."""
  from ptmjax import predict
  from ptmjax.errors import NonFiniteOutputError

  run = _copy_run(finished, tmp_path)
  p = predict.Predictor(run / 'final')
  from flax import nnx

  state = nnx.state(p.model, nnx.Param)
  pure = state.to_pure_dict()
  pure['ptm_head']['out']['bias'] = np.full_like(pure['ptm_head']['out']['bias'], np.nan)
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(p.model, state)
  with pytest.raises(NonFiniteOutputError, match="protein 'P1'"):
    p.predict({'P1': 'MKSPEELRRSSTKGK'})


# --- encodings ------------------------------------------------------------------------------
def test_text_encodings(tmp_path):
  """A UTF-8 byte-order mark is accepted; Latin-1, UTF-16 and binary files are errors that
  name the file and line (they were UnicodeDecodeError tracebacks); gzip is recognised by
  its bytes, not its name."""
  import gzip

  from ptmjax.data.records import InputError, read_fasta

  text = '>P1 first\nMKSPEELRRSS\n>P2 caf\u00e9\nMSTK\n'
  (tmp_path / 'bom.fasta').write_bytes(b'\xef\xbb\xbf' + text.encode())
  assert [r.id for r in read_fasta(tmp_path / 'bom.fasta')] == ['P1', 'P2']
  (tmp_path / 'latin1.fasta').write_bytes(text.encode('latin-1'))
  with pytest.raises(InputError, match=r'latin1\.fasta:3: not UTF-8 text: byte 0xe9'):
    list(read_fasta(tmp_path / 'latin1.fasta'))
  (tmp_path / 'utf16.fasta').write_bytes(text.encode('utf-16'))
  with pytest.raises(InputError, match=r'utf16\.fasta:1: not UTF-8 text \(UTF-16\?\)'):
    list(read_fasta(tmp_path / 'utf16.fasta'))
  (tmp_path / 'binary.fasta').write_bytes(bytes(range(128, 256)) * 4)
  with pytest.raises(InputError, match=r'binary\.fasta:\d+: not UTF-8'):
    list(read_fasta(tmp_path / 'binary.fasta'))
  (tmp_path / 'packed.fasta').write_bytes(gzip.compress(text.encode()))  # no .gz suffix
  assert [r.sequence for r in read_fasta(tmp_path / 'packed.fasta')] == ['MKSPEELRRSS', 'MSTK']


def test_cli_reports_an_encoding_error_in_one_line(finished, tmp_path, capsys):
  from ptmjax import cli

  (tmp_path / 'x.fasta').write_bytes('>P1 \u00e9\nMKS\n'.encode('latin-1'))
  run = _copy_run(finished, tmp_path)
  assert cli.main(['predict', '--checkpoint', str(run / 'final'), '--fasta',
                   str(tmp_path / 'x.fasta'), '--out', str(tmp_path / 'o.tsv')]) == 2  # fmt: skip
  err = capsys.readouterr().err
  assert 'x.fasta:1: not UTF-8 text' in err and 'Traceback' not in err


# --- refusing early, with the reason ----------------------------------------------------------
def test_resuming_with_another_model_is_refused_before_anything_is_written(tmp_path):
  """It used to overwrite config.json, then fail in Orbax with a 50-line traceback."""
  from ptmjax.errors import WorkdirError

  c = _config()
  c.eval.every_steps = 0
  c.optim.total_steps = 2
  trainer.train(c, tmp_path)
  stored = (tmp_path / 'config.json').read_text()
  other = _config()
  other.model.embed_dim = 48
  with pytest.raises(WorkdirError, match=r'model\.embed_dim: 32 -> 48'):
    trainer.train(other, tmp_path)
  assert (tmp_path / 'config.json').read_text() == stored
  c.sharding.mesh = {'data': 1, 'fsdp': 1}  # another mesh: the same run, finished
  trainer.train(c, tmp_path)
  assert checkpoint.read_meta(tmp_path / 'final')['info']['step'] == 2


def test_outputs_are_checked_before_the_work(tmp_path, monkeypatch):
  """An output that is a folder, or --calls on a model without thresholds, stop before
  any inference (they used to surface after all of it); a missing folder is made."""
  from ptmjax import cli, inference

  c = _config()
  c.eval.every_steps = 0  # no thresholds
  trainer.train(c, tmp_path / 'run')
  (tmp_path / 'p.fasta').write_text('>P1\nMKSPEELRRSS\n')
  ran = []
  monkeypatch.setattr(inference, 'run', lambda *a, **k: ran.append(1) or ([], None))
  base = ['--checkpoint', str(tmp_path / 'run' / 'final'), '--fasta', str(tmp_path / 'p.fasta')]
  (tmp_path / 'a_folder').mkdir()
  assert cli.main(['embed', *base, '--out', str(tmp_path / 'a_folder')]) == 2
  assert cli.main(['predict', *base, '--out', str(tmp_path / 'a_folder')]) == 2
  assert cli.main(['predict', *base, '--out', str(tmp_path / 'x.tsv'), '--calls']) == 2
  assert ran == []
  monkeypatch.undo()
  assert cli.main(['embed', *base, '--out', str(tmp_path / 'new' / 'dir' / 'e.npz')]) == 0


def test_a_dataset_that_is_not_built_says_how_to_build_it(tmp_path):
  """It used to say 'already prepared ... in the FileFormat.TFRECORD format'."""
  from ptmjax.data import sources

  with pytest.raises(
    FileNotFoundError, match=r'dataset yaam is not built in .*ptmjax data build yaam'
  ):
    sources.load('yaam', tmp_path)
  with pytest.raises(FileNotFoundError, match=r'ptmjax data build ptmdb --config all'):
    sources.load('ptmdb', tmp_path, 'all')


def test_an_empty_yaam_file_is_a_build_error(tmp_path):
  """It used to build a dataset without splits (exit 0); training then failed."""
  import shutil

  from conftest import DUMMY_YAAM

  from ptmjax import cli

  manual = tmp_path / 'raw'
  shutil.copytree(DUMMY_YAAM, manual)
  (manual / 'yaam_test.txt').write_text('')
  assert cli.main(['data', 'build', 'yaam', '--manual-dir', str(manual), '--data-dir',
                   str(tmp_path / 'data')]) == 2  # fmt: skip
  from ptmjax.data import sources
  from ptmjax.data.records import InputError

  with pytest.raises(InputError, match='no usable YAAM rows'):
    sources.build('yaam', manual, tmp_path / 'data2')


def test_one_trainer_per_work_dir(tmp_path):
  """A second trainer on a busy work dir stops at once with one line naming the holder
  (two used to run, interleave metrics.jsonl, and one died in Orbax); the lock goes
  with its process, so a killed run leaves none behind."""
  from ptmjax.errors import WorkdirError

  c = _config()
  c.eval.every_steps = 0
  tmp_path.mkdir(exist_ok=True)
  from ptmjax.run_dir import RunDir

  with RunDir(tmp_path).lock():
    with pytest.raises(WorkdirError, match=r'in use by process \d+ on '):
      trainer.train(c, tmp_path)
  assert not (tmp_path / 'metrics.jsonl').exists()
  trainer.train(c, tmp_path)  # free again
  assert (tmp_path / 'final').is_dir()


# --- resuming what a crash left ---------------------------------------------------------------
def test_a_truncated_latest_checkpoint_falls_back_to_best(tmp_path):
  """A latest checkpoint whose files were cut short used to end the run for good; the run
  resumes from the newest readable (best/) one, and metrics rows past it are dropped."""
  import shutil

  c = _config()
  c.eval.every_steps = 3  # best/3 and best/6
  trainer.train(c, tmp_path)
  shutil.rmtree(tmp_path / 'final')
  for f in (tmp_path / 'checkpoints' / 'latest' / '6' / 'state').rglob('*'):
    if f.is_file():
      f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])  # truncated
  with open(tmp_path / 'metrics.jsonl', 'a') as f:  # rows a killed run logged, never saved
    f.write(json.dumps({'step': 7, 'loss': 9.9}) + '\n')
  trainer.train(c, tmp_path)  # resumes from best/6 (latest/6 is unreadable)
  rows = [json.loads(x) for x in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  steps = [r['step'] for r in rows if 'loss' in r]
  assert (
    steps == sorted(set(steps))
    and steps[-1] == 6
    and 9.9 not in [r['loss'] for r in rows if 'loss' in r]
  )
  assert 7 not in steps
  assert checkpoint.read_meta(tmp_path / 'final')['info']['step'] == 6


@pytest.mark.slow  # default suite time (issue 26): SIGTERM's checkpoint stays (test_trainer)
def test_ctrl_c_checkpoints_like_sigterm_and_exits_130(tmp_path):
  import signal
  import sys

  from conftest import interrupt_training

  cmd = [sys.executable, '-m', 'ptmjax.cli', 'train', '--config', 'synthetic:test',
         '--workdir', str(tmp_path), '--config.sharding.num_devices=1',
         '--config.sharding.mesh.data=1']  # fmt: skip
  returncode, out = interrupt_training(cmd, tmp_path, signal.SIGINT)
  assert returncode == 130, out[-2000:]
  assert 'preempted: signal 2 at step' in out and 'Traceback' not in out
  assert list((tmp_path / 'checkpoints' / 'latest').iterdir())


def test_empty_inputs_and_zero_steps_are_errors(finished, tmp_path, caplog):
  from ptmjax import cli

  (tmp_path / 'empty.fasta').write_text('')
  run = _copy_run(finished, tmp_path)
  base = ['predict', '--checkpoint', str(run / 'final'), '--out', str(tmp_path / 'o.tsv')]
  assert cli.main([*base, '--fasta', str(tmp_path / 'empty.fasta')]) == 2
  (tmp_path / 'p.fasta').write_text('>P1\nMKSPEELRRSS\n')
  assert cli.main([*base, '--fasta', str(tmp_path / 'p.fasta')]) == 0
  with caplog.at_level('WARNING'):
    assert cli.main([*base, '--fasta', str(tmp_path / 'p.fasta')]) == 0
  assert 'exists; it will be replaced' in caplog.text
  c = _config()
  c.optim.total_steps = 0
  with pytest.raises(ValueError, match='total_steps is 0'):
    trainer.train(c, tmp_path / 'zero')


def test_usage_errors_are_one_line(finished, tmp_path, capsys):
  from ptmjax import cli

  run = _copy_run(finished, tmp_path)
  (tmp_path / 'p.fasta').write_text('>P1\nMKSPEELRRSS\n')
  assert cli.main(['predict', '--checkpoint', str(run / 'final'), '--fasta',
                   str(tmp_path / 'p.fasta'), '--out', str(tmp_path / 'o.tsv'),
                   '--channels', 'glycation']) == 2  # fmt: skip
  err = capsys.readouterr().err
  assert "channels ['glycation'] not trained" in err and 'Traceback' not in err


def test_unsupported_urls_are_refused_not_made_local(tmp_path, monkeypatch, capsys):
  """`--workdir gs://b/r` used to write config, metrics and checkpoints into the local
  folder `gs:/b/r`, then crash. gs:// now works where tests/test_gcs.py shows it (train,
  model folders, predict, studies); other schemes, and gs:// where it does not work
  (dataset builds), are refused before anything is written, naming the setting."""
  from ptmjax import cli
  from ptmjax.errors import UsageError

  monkeypatch.chdir(tmp_path)
  with pytest.raises(UsageError, match="work dir 's3://b/r': only local paths and gs://"):
    trainer.train(_config(), 's3://b/r')
  c = _config()
  c.init_from.path = 's3://b/model'
  with pytest.raises(UsageError, match='init_from.path'):
    trainer.train(c, tmp_path / 'run')
  with pytest.raises(UsageError, match='model folder'):
    checkpoint.load_model('http://b/model')
  (tmp_path / 'p.fasta').write_text('>P1\nMKSPEELRRSS\n')
  assert cli.main(['predict', '--checkpoint', 's3://b/final', '--fasta', 'p.fasta', '--out',
                   'o.tsv']) == 2  # fmt: skip
  assert 'only local paths and gs://' in capsys.readouterr().err
  for study in ('compare:tiny', 'sweep:tiny'):
    name = study.split(':')[0]
    assert cli.main([name, '--config', study, '--workdir', 's3://b/c']) == 2
    assert "work dir 's3://b/c': only local paths and gs://" in capsys.readouterr().err
  assert cli.main(['data', 'build', 'yaam', '--manual-dir', str(tmp_path),
                   '--data-dir', 'gs://b/tfds']) == 2  # fmt: skip
  assert 'build locally, then copy' in capsys.readouterr().err
  assert not (tmp_path / 'gs:').exists() and not (tmp_path / 's3:').exists()


@pytest.mark.parametrize(
  'key, value',
  [('optim.lr', 0.5), ('seed', 3), ('data.synthetic.seed', 7), ('optim.total_steps', 8)],
)
def test_a_finished_run_with_other_settings_is_refused_not_reused(finished, tmp_path, key, value):
  """Issue 28 row 1: another lr / seed / data seed used to "resume from step 6", train
  nothing and rewrite final/ and config.json to claim the new settings."""
  from ptmjax.errors import WorkdirError

  run = _copy_run(finished, tmp_path)
  before = (run / 'config.json').read_text(), checkpoint.read_meta(run / 'final')
  c = _config()
  *path, last = key.split('.')
  node = c
  for part in path:
    node = node[part]
  node[last] = value
  with pytest.raises(WorkdirError, match=f'other settings \\({key}: '):
    trainer.train(c, run)
  assert ((run / 'config.json').read_text(), checkpoint.read_meta(run / 'final')) == before


def test_restart_moves_the_old_run_aside_and_trains_anew(finished, tmp_path, capsys):
  from ptmjax import cli

  run = _copy_run(finished, tmp_path)
  old_meta = checkpoint.read_meta(run / 'final')
  args = ['train', '--config', 'synthetic:test', '--workdir', str(run), '--single-process',
          '--config.sharding.num_devices=1', '--config.optim.total_steps=4',
          '--config.eval.every_steps=0']  # fmt: skip
  assert cli.main(args) == 2
  assert 'other settings' in capsys.readouterr().err
  assert cli.main([*args, '--restart']) == 0
  aside = [p for p in tmp_path.iterdir() if p.name.startswith('run.replaced-')]
  assert len(aside) == 1 and checkpoint.read_meta(aside[0] / 'final') == old_meta
  assert checkpoint.read_meta(run / 'final')['info']['step'] == 4


def test_a_study_refuses_a_finished_stage_with_other_settings(finished, tmp_path):
  """`compare`/`quickstart` used to log "done already" and report the old models."""
  from ptmjax.errors import WorkdirError
  from ptmjax.studies import runs

  run = _copy_run(finished, tmp_path)
  assert runs.train(_config(), run) == run / 'final'  # same settings: reused
  c = _config()
  c.optim.lr = 0.5
  with pytest.raises(WorkdirError, match='optim.lr'):
    runs.train(c, run)


@pytest.mark.parametrize(
  'override, message',
  [
    (
      '--config.optim.learning_rate=1e-3',
      'no such setting in config synthetic:test; did you mean optim.lr?',
    ),
    ('--config.optim.lr=fast', "could not convert string to float: 'fast'"),
    ('--config.optim.lr=-1', 'optim.lr=-1.0: must be > 0'),
    ('--config.data.batch_size=0', 'data.batch_size=0: must be >= 1'),
    ('--config.data.max_len=2', 'data.max_len=2: must be >= 3'),
    ('--config.optim.warmup_steps=50', 'optim.warmup_steps=50: must be >= 0 and below'),
    ('--config.optim.grad_accum_steps=0', 'optim.grad_accum_steps=0: must be >= 1'),
  ],
)
def test_bad_settings_are_one_line_exit_2_before_any_work(tmp_path, capsys, override, message):
  """Issue 28 rows 7-8: these ran to exit 0 (and wrote a model) or ended in tracebacks."""
  from ptmjax import cli

  workdir = tmp_path / 'run'
  code = cli.main(['train', '--config', 'synthetic:test', '--workdir', str(workdir),
                   '--single-process', override])  # fmt: skip
  err = capsys.readouterr().err
  assert code == 2, err
  assert message in err and 'Traceback' not in err and len(err.strip().splitlines()) == 1
  assert not workdir.exists()


# --- issue 28: inputs through pipes, outputs written whole ------------------------------
def _records(n=60, length=120, seed=0):
  rng = np.random.default_rng(seed)
  letters = np.array(list('ACDEFGHIKLMNPQRSTVWY'))
  return ''.join(
    f'>P{i:03d} protein {i}\n{"".join(rng.choice(letters, length))}\n' for i in range(n)
  )


def _fifo(tmp_path, data: bytes, name='in.fifo'):
  """A named pipe that a thread fills once: what `<(cat x.fa)` hands a program."""
  import os
  import threading

  path = tmp_path / name
  os.mkfifo(path)

  def feed():
    with open(path, 'wb') as f:
      f.write(data)

  threading.Thread(target=feed, daemon=True).start()
  return path


@pytest.mark.parametrize('compressed', [False, True])
def test_fasta_through_a_pipe_loses_no_record(tmp_path, compressed):
  """Issue 28 row 2: the gzip sniff opened the pipe once more and lost its first 4 KB
  (60 records in, 20 out); gzip through a pipe was a BadGzipFile traceback."""
  import gzip

  from ptmjax.data.records import read_proteins

  text = _records()
  data = gzip.compress(text.encode()) if compressed else text.encode()
  got = read_proteins(_fifo(tmp_path, data))
  assert [i for i, _ in got] == [f'P{i:03d}' for i in range(60)]
  assert got == read_proteins(_write(tmp_path / 'x.fa', text))


def test_fasta_from_standard_input(tmp_path, monkeypatch):
  import io
  import sys

  from ptmjax.data.records import read_proteins

  monkeypatch.setattr(sys, 'stdin', io.TextIOWrapper(io.BytesIO(_records(5).encode())))
  assert len(read_proteins('-')) == 5


def _write(path, text):
  path.write_text(text)
  return path


def test_predict_reads_a_pipe_and_writes_every_protein(finished, tmp_path):
  from ptmjax import cli

  run = _copy_run(finished, tmp_path)
  out = tmp_path / 'o.tsv'
  fifo = _fifo(tmp_path, _records(30, 60).encode())
  args = ['predict', '--checkpoint', str(run / 'final'), '--fasta', str(fifo), '--out', str(out)]
  assert cli.main(args) == 0
  proteins = {line.split('\t')[0] for line in out.read_text().splitlines()[1:]}
  assert len(proteins) == 30


def test_a_failed_write_keeps_the_previous_output_and_leaves_no_partial_file(
  finished, tmp_path, monkeypatch, capsys
):
  """Issue 28 row 3: a full disk left a truncated TSV that looked valid, over the old one."""
  import errno

  from ptmjax import cli, predict

  run = _copy_run(finished, tmp_path)
  fasta = _write(tmp_path / 'p.fasta', _records(4, 50))
  out = tmp_path / 'o.tsv'
  args = ['predict', '--checkpoint', str(run / 'final'), '--fasta', str(fasta), '--out', str(out)]
  assert cli.main(args) == 0
  good = out.read_text()
  real_rows = predict.Predictor.write_rows

  def disk_full(self, f, proteins, probs, **kw):  # some rows written, then the disk fills
    real_rows(self, f, dict(list(proteins.items())[:1]), probs, **kw)
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(predict.Predictor, 'write_rows', disk_full)
  capsys.readouterr()
  assert cli.main(args) == 2
  err = capsys.readouterr().err
  assert 'No space left on device' in err and 'previous file is unchanged' in err
  assert out.read_text() == good
  assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('.')) == []


def test_out_equal_to_the_input_is_refused(finished, tmp_path, capsys):
  from ptmjax import cli

  run = _copy_run(finished, tmp_path)
  fasta = _write(tmp_path / 'p.fasta', _records(2, 30))
  before = fasta.read_text()
  for cmd in ('predict', 'embed'):
    args = [cmd, '--checkpoint', str(run / 'final'), '--fasta', str(fasta), '--out', str(fasta)]
    assert cli.main(args) == 2
    assert 'is also the input' in capsys.readouterr().err
  assert fasta.read_text() == before


def test_embed_writes_exactly_the_named_file(finished, tmp_path, capsys):
  """Issue 28 row 6: `--out emb.bin` wrote emb.bin.npz and printed `-> emb.bin`."""
  from ptmjax import cli

  run = _copy_run(finished, tmp_path)
  fasta = _write(tmp_path / 'p.fasta', _records(3, 30))
  out = tmp_path / 'emb.bin'
  assert cli.main(['embed', '--checkpoint', str(run / 'final'), '--fasta', str(fasta),
                   '--out', str(out)]) == 0  # fmt: skip
  assert out.is_file() and not (tmp_path / 'emb.bin.npz').exists()
  assert list(np.load(out)['ids']) == ['P000', 'P001', 'P002']


@pytest.mark.parametrize(
  'extra, message',
  [
    (['--stride', '0'], '0: must be >= 1'),
    (['--max-len', '2'], '2: must be >= 3'),
    (['--max-len', '0'], '0: must be >= 3'),
  ],
)
def test_window_settings_out_of_range_exit_2(finished, tmp_path, capsys, extra, message):
  """Issue 28 rows 8 and 10: `--stride 0` was a traceback, `--max-len 0` silently the
  model's default and 3 a one-residue window."""
  from ptmjax import cli

  fasta = _write(tmp_path / 'p.fasta', _records(1, 30))
  with pytest.raises(SystemExit) as e:
    cli.main(['predict', '--checkpoint', str(finished / 'final'), '--fasta', str(fasta),
              '--out', str(tmp_path / 'o.tsv'), *extra])  # fmt: skip
  assert e.value.code == 2 and message in capsys.readouterr().err


def test_fasta_naming_a_folder_is_one_line(finished, tmp_path, capsys):
  from ptmjax import cli

  code = cli.main(['predict', '--checkpoint', str(finished / 'final'), '--fasta', str(tmp_path),
                   '--out', str(tmp_path / 'o.tsv')])  # fmt: skip
  err = capsys.readouterr().err
  assert code == 2 and 'is a folder; name a file' in err and 'Traceback' not in err


def test_an_edited_model_json_is_one_line(finished, tmp_path, capsys):
  from ptmjax import cli

  run = _copy_run(finished, tmp_path)
  meta_file = run / 'final' / checkpoint.MODEL_FILE
  meta = json.loads(meta_file.read_text())
  del meta['model']['embed_dim']
  meta['model']['embed_dimension'] = 32
  meta_file.write_text(json.dumps(meta))
  fasta = _write(tmp_path / 'p.fasta', _records(1, 30))
  code = cli.main(['predict', '--checkpoint', str(run / 'final'), '--fasta', str(fasta),
                   '--out', str(tmp_path / 'o.tsv')])  # fmt: skip
  err = capsys.readouterr().err
  assert code == 2 and 'not a valid model description' in err and 'Traceback' not in err


def test_init_from_a_corrupted_folder_is_refused_by_its_checksum(finished, tmp_path):
  """Issue 28 row 8: init_from skipped the checksum predict verifies (and a damaged
  folder was a 164-line traceback)."""
  from ptmjax.errors import ModelFolderError

  run = _copy_run(finished, tmp_path)
  meta_file = run / 'final' / checkpoint.MODEL_FILE
  meta = json.loads(meta_file.read_text())
  meta['params_sha256'] = '0' * 64  # as if a parameter file had changed since the save
  meta_file.write_text(json.dumps(meta))
  c = _config()
  c.init_from.path = str(run / 'final')
  with pytest.raises(ModelFolderError, match='do not match the checksum'):
    trainer.train(c, tmp_path / 'next')


def test_predict_and_embed_stream_in_chunks(finished, tmp_path, monkeypatch):
  """A proteome never has to fit in RAM: proteins are read, run and written a chunk at
  a time; the outputs equal one pass over the whole file."""
  from ptmjax import cli
  from ptmjax.data import records

  run = _copy_run(finished, tmp_path)
  fasta = _write(tmp_path / 'p.fasta', _records(7, 40))
  base = ['--checkpoint', str(run / 'final'), '--fasta', str(fasta)]
  assert cli.main(['predict', *base, '--out', str(tmp_path / 'whole.tsv')]) == 0
  assert cli.main(['embed', *base, '--out', str(tmp_path / 'whole.npz')]) == 0
  sizes = []
  real = records.protein_chunks

  def small_chunks(path, residues=1 << 21):
    for chunk in real(path, residues=100):  # 3 proteins of 40 residues a chunk
      sizes.append(len(chunk))
      yield chunk

  for module in ('ptmjax.predict', 'ptmjax.embed'):
    monkeypatch.setattr(f'{module}.protein_chunks', small_chunks)
  assert cli.main(['predict', *base, '--out', str(tmp_path / 'chunked.tsv')]) == 0
  assert cli.main(['embed', *base, '--out', str(tmp_path / 'chunked.npz')]) == 0
  assert sizes == [3, 3, 1, 3, 3, 1]
  assert (tmp_path / 'chunked.tsv').read_text() == (tmp_path / 'whole.tsv').read_text()
  whole, chunked = np.load(tmp_path / 'whole.npz'), np.load(tmp_path / 'chunked.npz')
  assert sorted(whole.files) == sorted(chunked.files) and len(whole.files) == 15
  for k in whole.files:
    np.testing.assert_allclose(chunked[k], whole[k], rtol=1e-5, atol=1e-6) if k != 'ids' else (
      np.testing.assert_array_equal(chunked[k], whole[k])
    )
