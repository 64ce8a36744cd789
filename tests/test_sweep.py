"""`ptmjax sweep`: the plan, the overrides, resuming, the results table."""

import json

import ml_collections
import pytest

from ptmjax import cli
from ptmjax.configs import sweep as sweep_config
from ptmjax.studies import sweep
from ptmjax.training import trainer


def _synthetic(c, trials=2):
  """The tiny sweep on synthetic proteins generated in code (seconds per trial)."""
  c.trials = trials
  c.train.data.update(name='synthetic', config='target', exclude_homologs_of='')
  c.train.data.synthetic = ml_collections.ConfigDict(
    dict(num_proteins=40, seed=0, variant='target')
  )
  c.train.eval.max_proteins = 20
  return c


def test_random_plan_is_seeded_prefix_stable_and_in_range():
  c = sweep_config.get_config('small')
  a = sweep.plan(c)
  assert len(a) == 12 and sweep.plan(c) == a
  c.trials = 20
  assert sweep.plan(c)[:12] == a  # adding trials keeps the ones already run
  c.seed = 1
  assert sweep.plan(c)[:12] != a
  for t in a:
    assert 3e-4 <= t['lr'] <= 5e-3 and 1e-4 <= t['weight_decay'] <= 1e-1
    assert t['batch_size'] in (8, 16, 32) and t['pos_weight'] in ('auto', 1, 5)
  # Spread over the range, not stuck at one end (log-uniform over ~1.2 decades).
  c.trials, c.space = 400, ml_collections.ConfigDict(dict(lr='log:1e-4:1e-2'))
  lrs = sorted(t['lr'] for t in sweep.plan(c))
  assert lrs[100] < 5e-4 and lrs[300] > 2e-3  # quartiles of log-uniform: 3.2e-4, 3.2e-3


def test_grid_plan_every_combination():
  c = sweep_config.get_config('small')
  c.method, c.trials = 'grid', 0
  c.space = ml_collections.ConfigDict(
    dict(lr='1e-3,2e-3', batch_size='8,16', warmup_steps='0,10,20')
  )
  trials = sweep.plan(c)
  assert len(trials) == 12 and len({json.dumps(t, sort_keys=True) for t in trials}) == 12
  c.space.lr = 'log:1e-4:1e-3'
  with pytest.raises(sweep.SweepError, match='grid search needs listed values'):
    sweep.plan(c)


def test_bad_space_entries_are_named():
  c = sweep_config.get_config('tiny')
  c.space = ml_collections.ConfigDict(dict(lr='log:0:1'))
  with pytest.raises(sweep.SweepError, match=r'space.lr=.*0 < LO < HI'):
    sweep.plan(c)
  with pytest.raises(sweep.SweepError, match="no 'optim.nonsense'"):
    sweep.trial_config(c, {'optim__nonsense': 1})


def test_trial_config_applies_values():
  c = sweep_config.get_config('small')
  values = dict(lr=1e-3, batch_size=32, weight_decay=0.02, label_smoothing=0, pos_weight=5,
                warmup_steps=30, optim__grad_clip_norm=0.5)  # fmt: skip
  t = sweep.trial_config(c, values)
  assert (t.optim.lr, t.data.batch_size, t.optim.weight_decay) == (1e-3, 32, 0.02)
  assert t.loss.label_smoothing == 0.0 and isinstance(t.loss.label_smoothing, float)
  assert t.loss.pos_weight == '5'  # the trainer reads 'auto' or a number from a string
  assert (t.optim.warmup_steps, t.optim.grad_clip_norm) == (30, 0.5)
  assert c.train.optim.lr == 2e-3  # the sweep's own config is untouched


def test_sweep_runs_sorts_and_resumes(tmp_path, monkeypatch):
  c = _synthetic(sweep_config.get_config('tiny'), trials=2)
  calls = []
  real_train = trainer.train

  def train(config, workdir):
    calls.append(workdir.name)
    if workdir.name == 'trial_001' and calls.count('trial_001') == 1:
      raise trainer.Preempted('signal 15 at step 2; checkpoint saved')
    return real_train(config, workdir)

  monkeypatch.setattr(trainer, 'train', train)
  with pytest.raises(trainer.Preempted):
    sweep.run(c, tmp_path)
  assert (tmp_path / 'trial_000' / 'result.json').exists()
  assert not (tmp_path / 'trial_001' / 'result.json').exists()

  # Re-run with one more trial: 000 is read back, 001 resumes, 002 is new.
  c.trials = 3
  path = sweep.run(c, tmp_path, command='ptmjax sweep ...')
  assert calls == ['trial_000', 'trial_001', 'trial_001', 'trial_002']
  results = json.loads((tmp_path / 'results.json').read_text())['trials']
  assert [r['status'] for r in results] == ['ok'] * 3
  metrics = [r['metric'] for r in results]
  assert metrics == sorted(metrics, reverse=True)
  for r in results:  # the table's number is the trial's own last evaluation
    rows = [json.loads(x) for x in (tmp_path / f'trial_{r["trial"]:03d}' / 'metrics.jsonl')
            .read_text().splitlines()]  # fmt: skip
    last = [x for x in rows if c.metric in x][-1]
    assert r['metric'] == pytest.approx(last[c.metric]) and 0 < r['metric'] < 1
    assert r['best'] >= r['metric']
  text = path.read_text()
  assert text.count('\n| ') == 4 and 'Best: trial' in text
  assert (tmp_path / 'sweep.png').stat().st_size > 10_000

  # A changed plan in the same work dir is refused, not mixed in.
  c.seed = 7
  with pytest.raises(sweep.SweepError, match='different plan'):
    sweep.run(c, tmp_path)


def test_failed_trial_is_reported_not_fatal(tmp_path):
  c = _synthetic(sweep_config.get_config('tiny'), trials=2)
  c.space = ml_collections.ConfigDict(dict(batch_size='3,8'))  # 3 rows on 8 devices: an error
  c.method = 'grid'
  sweep.run(c, tmp_path)
  results = json.loads((tmp_path / 'results.json').read_text())['trials']
  by_bs = {r['values']['batch_size']: r for r in results}
  assert by_bs[8]['status'] == 'ok' and results[0]['values']['batch_size'] == 8  # ok first
  assert by_bs[3]['status'] == 'failed' and 'divisible' in by_bs[3]['error']
  assert 'failed' in (tmp_path / 'results.md').read_text()


@pytest.mark.slow  # default suite time (issue 26): the sweep on synthetic data stays
def test_cli_sweep_on_real_yaam(real_tfds, tmp_path):
  data_dir, _, _ = real_tfds
  rc = cli.main(['sweep', '--config', 'sweep:tiny', '--workdir',
                 str(tmp_path), f'--config.train.data.data_dir={data_dir}'])  # fmt: skip
  assert rc == 0
  payload = json.loads((tmp_path / 'results.json').read_text())
  results = payload['trials']
  assert len(results) == 2 and all(r['status'] == 'ok' for r in results)
  assert payload['provenance']['git'] and 'CPU cores' in payload['provenance']['machine']
  assert 'ptmjax sweep --config sweep:tiny' in (tmp_path / 'results.md').read_text()


def test_failed_trials_run_again_and_fail_the_command(tmp_path, monkeypatch):
  """A failed trial was read back as done on re-run and the sweep exited 0 (issue 17)."""
  import argparse

  from ptmjax import commands

  c = _synthetic(sweep_config.get_config('tiny'), trials=2)
  real_train, calls = trainer.train, []

  def train(config, workdir):
    calls.append(workdir.name)
    if workdir.name == 'trial_000' and calls.count('trial_000') == 1:
      raise RuntimeError('out of memory')  # the cause, fixed before the re-run
    return real_train(config, workdir)

  monkeypatch.setattr(trainer, 'train', train)
  monkeypatch.setattr(commands, 'study_config', lambda name, args, overrides: (c, 'ptmjax sweep'))
  args = argparse.Namespace(config='sweep:tiny', workdir=str(tmp_path))
  assert sweep.run_from_args(args, []) == 1  # a trial failed: not a success
  results = json.loads((tmp_path / 'results.json').read_text())['trials']
  assert {r['trial']: r['status'] for r in results} == {0: 'failed', 1: 'ok'}
  assert sweep.run_from_args(args, []) == 0  # retried, now fine; trial 1 read back
  assert calls == ['trial_000', 'trial_001', 'trial_000']
  results = json.loads((tmp_path / 'results.json').read_text())['trials']
  assert all(r['status'] == 'ok' for r in results)
