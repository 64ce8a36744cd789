"""The training recipe of the stage comparison: every residue each epoch, nested cluster
subsets, channel loss weights, the best checkpoint as the final model with patience,
the stage hand-off, calibration stored and applied, the score cache's key."""

import json
import pathlib

import numpy as np
import pytest

from ptmjax import checkpoint as ckpt
from ptmjax import configs
from ptmjax.configs import synthetic
from ptmjax.data import pipeline, ptm_types, sources
from ptmjax.data import synthetic as synth
from ptmjax.data import tokenizer as tok
from ptmjax.errors import UsageError
from ptmjax.evaluation import scoring
from ptmjax.models import ModelConfig, create_model
from ptmjax.training import trainer


def test_tiles_cover_every_residue_once_and_move_their_cuts():
  source = synth.splits(40, seed=0)['train']
  pipe = pipeline.Pipeline(
    source, tok.TOKENIZERS['esm'](), batch_size=4, max_len=64, mode='pack', crop='tile'
  )
  long = [i for i, n in enumerate(pipe.lengths) if n > pipe.window]
  assert long
  cuts = {}
  for epoch in (0, 1):
    for i in long:
      pieces = pipe._pieces(epoch, i)
      covered = np.zeros(pipe.lengths[i], int)
      for _, start, n in pieces:
        assert 0 < n <= pipe.window
        covered[start : start + n] += 1
      assert (covered == 1).all()
      cuts[epoch, i] = [s for _, s, _ in pieces]
  assert any(cuts[0, i] != cuts[1, i] for i in long)
  # The epoch's batches hold nearly every residue (a last partial batch waits a round).
  residues = sum(n for plan in pipe.plan(0) for row in plan.rows for _, _, n in row)
  assert residues >= 0.85 * pipe.lengths.sum()
  random = pipeline.Pipeline(source, tok.TOKENIZERS['esm'](), batch_size=4, max_len=64, mode='pack')
  seen = sum(n for plan in random.plan(0) for row in plan.rows for _, _, n in row)
  assert seen < residues


def test_cluster_subsets_are_nested_and_keep_clusters_whole():
  train = [
    {'id': f'P{i}', 'cluster': f'C{i // 3}', 'sequence': 'MS', 'labels': None} for i in range(300)
  ]
  subsets = {f: sources.cluster_subset(train, f) for f in (0.1, 0.25, 0.5, 1.0)}
  ids = {f: {ex['id'] for ex in s} for f, s in subsets.items()}
  assert ids[0.1] < ids[0.25] < ids[0.5] < ids[1.0]
  for f, s in subsets.items():
    assert abs(len(s) - f * 300) <= 2
    clusters = {ex['cluster'] for ex in s}
    assert sum(ex['cluster'] in clusters for ex in train) == len(s)  # whole clusters
  with pytest.raises(ValueError, match='train_fraction'):
    sources.cluster_subset(train, 0)


def test_channel_loss_weights():
  from ptmjax.training import loss_spec

  c = synthetic.get_config('test')
  c.loss.channel_weights = 'phosphorylation=2,acetylation=0.5'
  w = loss_spec.channel_loss_weights(c, ['phosphorylation', 'acetylation', 'methylation'])
  assert w[ptm_types.INDEX['phosphorylation']] == 2.0
  assert w[ptm_types.INDEX['acetylation']] == 0.5
  assert w[ptm_types.INDEX['methylation']] == 1.0
  assert w[ptm_types.INDEX['oxidation']] == 0.0  # not trained at all
  c.loss.channel_weights = 'phosphorylation:2'
  with pytest.raises(UsageError, match='channel_weights'):
    loss_spec.channel_loss_weights(c, ['phosphorylation'])


def _scripted_config(total=10, patience=2):
  c = synthetic.get_config('test')
  c.optim.update(total_steps=total, warmup_steps=1)
  c.eval.update(every_steps=2, max_proteins=6, patience=patience)
  c.checkpoint.update(final='best', every_steps=1000)
  return c


@pytest.fixture(scope='module')
def best_run(tmp_path_factory):
  """A run whose validation metric is scripted: best at step 4, then worse; patience 2
  stops it at step 8."""
  workdir = tmp_path_factory.mktemp('best')
  values = iter([0.6, 0.8, 0.7, 0.65, 0.9])
  real = scoring.evaluate
  mp = pytest.MonkeyPatch()
  mp.setattr(
    scoring,
    'evaluate',
    lambda *a, **k: ({'val/phosphorylation/auroc': next(values)}, {'phosphorylation': 0.4}),
  )
  try:
    trainer.train(_scripted_config(), workdir)
  finally:
    mp.undo()
  assert scoring.evaluate is real
  return workdir


def test_patience_stops_and_final_is_the_best_step(best_run):
  info = ckpt.read_meta(best_run / 'final')['info']
  assert (info['step'], info['last_step'], info['stopped_early']) == (4, 8, True)
  assert info['metrics'] == {'val/phosphorylation/auroc': 0.8}
  rows = [json.loads(x) for x in (best_run / 'metrics.jsonl').read_text().splitlines()]
  assert max(r['step'] for r in rows) == 8
  # The final parameters are those of step 4's checkpoint, not the last step's.
  model, _, _ = ckpt.load_model(best_run / 'final')
  from flax import nnx

  final = nnx.state(model, nnx.Param).to_pure_dict()
  import orbax.checkpoint as ocp

  ckdir = best_run / 'checkpoints'
  assert 4 in [int(p.name) for p in (ckdir / 'best').iterdir() if p.name.isdigit()]
  saved = ocp.StandardCheckpointer().restore((ckdir / 'best' / '4' / 'state').absolute())
  kernel = final['ptm_head']['out']['kernel']
  np.testing.assert_array_equal(kernel, saved['model']['ptm_head']['out']['kernel'])
  assert [p.name for p in (ckdir / 'latest').iterdir() if p.name.isdigit()] == ['8']
  last = ocp.StandardCheckpointer().restore((ckdir / 'latest' / '8' / 'state').absolute())
  assert not np.array_equal(kernel, last['model']['ptm_head']['out']['kernel'])
  # Re-running the finished (early-stopped) run changes nothing.
  before = (best_run / 'final' / ckpt.MODEL_FILE).read_text()
  assert trainer.train(_scripted_config(), best_run) == {'val/phosphorylation/auroc': 0.8}
  assert (best_run / 'final' / ckpt.MODEL_FILE).read_text() == before


def _params(path):
  from flax import nnx

  model, _, _ = ckpt.load_model(path)
  return nnx.state(model, nnx.Param).to_pure_dict()


@pytest.mark.parametrize('skip', [(), ('ptm_head/.*', 'count_head/.*')])
def test_stage_hand_off_carries_the_best_weights(best_run, tmp_path, skip):
  """Stage 2 starts from stage 1's final (= best) model: the encoder always, the PTM head
  only when it is kept (two-stage keeps it: the channels are shared)."""
  c = synthetic.get_config('test')
  c.optim.update(total_steps=1, warmup_steps=1, lr=0.0, weight_decay=0.0)
  c.init_from.update(path=str(best_run / 'final'), skip=skip)
  trainer.train(c, tmp_path)
  start, after = _params(best_run / 'final'), _params(tmp_path / 'final')
  import jax

  def same(a, b):
    return all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))

  assert same(start['encoder'], after['encoder'])
  assert same(start['ptm_head'], after['ptm_head']) == (skip == ())


def test_calibration_is_stored_and_applied_by_predict(best_run, tmp_path):
  from ptmjax import predict

  info = ckpt.read_meta(best_run / 'final')['info']
  assert set(info['calibration']) <= set(info['channels'])
  assert 'phosphorylation' in info['calibration']
  fasta = tmp_path / 'p.fasta'
  fasta.write_text('>a\nMKSPRSSTYKAKSPESTY\n>b\nMSSSPKKTTY\n')
  predict.predict_fasta(best_run / 'final', fasta, tmp_path / 'raw.tsv', calls=True, progress=False)
  predict.predict_fasta(
    best_run / 'final', fasta, tmp_path / 'cal.tsv', calls=True, progress=False, calibrated=True
  )
  raw = [x.split('\t') for x in (tmp_path / 'raw.tsv').read_text().splitlines()]
  cal = [x.split('\t') for x in (tmp_path / 'cal.tsv').read_text().splitlines()]
  assert 'phosphorylation_calibrated' in cal[0] and 'phosphorylation' in raw[0]
  j_raw, j_cal = raw[0].index('phosphorylation'), cal[0].index('phosphorylation_calibrated')
  a, b = info['calibration']['phosphorylation']
  for r, k in zip(raw[1:], cal[1:], strict=True):
    if r[j_raw] != 'NA':
      expect = 1 / (1 + np.exp(-(a * np.log(float(r[j_raw]) / (1 - float(r[j_raw]))) + b)))
      assert float(k[j_cal]) == pytest.approx(expect, abs=2e-4)
  j_call = raw[0].index('phosphorylation_call')
  assert [r[j_call] for r in raw[1:]] == [k[cal[0].index('phosphorylation_call')] for k in cal[1:]]
  # A model without stored calibration: a clear refusal, not raw numbers under a new name.
  model = create_model(ModelConfig(num_layers=1, embed_dim=16, num_heads=2, mlp_dim=32), seed=0)
  ckpt.save_model(
    tmp_path / 'old',
    model,
    tok.TOKENIZERS['esm'](),
    {'channels': ['phosphorylation'], 'candidates': {}},
  )
  with pytest.raises(UsageError, match='no calibration stored'):
    predict.Predictor(tmp_path / 'old', calibrated=True)


def test_score_cache_does_not_serve_a_changed_checkpoint(tmp_path):
  from ptmjax.studies import compare

  config = configs.load('compare:tiny')
  config.single.data.max_len = 64
  exs = synth.splits(20, seed=0)['test']
  path = tmp_path / 'model'
  cfg = ModelConfig(num_layers=1, embed_dim=16, num_heads=2, mlp_dim=32)
  ckpt.save_model(path, create_model(cfg, seed=0), tok.TOKENIZERS['esm'](), {})
  first = compare.score_models(config, tmp_path, {('single', 0): path}, {'test': exs})
  ckpt.save_model(path, create_model(cfg, seed=1), tok.TOKENIZERS['esm'](), {})  # retrained
  second = compare.score_models(config, tmp_path, {('single', 0): path}, {'test': exs})
  assert len(list((tmp_path / 'scores').glob('*.npy'))) == 2
  assert not np.allclose(first['single', 0, 'test'], second['single', 0, 'test'])
  again = compare.score_models(config, tmp_path, {('single', 0): path}, {'test': exs})
  np.testing.assert_array_equal(again['single', 0, 'test'], second['single', 0, 'test'])
  changed = [dict(e) for e in exs]
  changed[0]['labels'] = np.zeros_like(changed[0]['labels'])  # rebuilt data
  compare.score_models(config, tmp_path, {('single', 0): path}, {'test': changed})
  assert len(list((tmp_path / 'scores').glob('*.npy'))) == 3
  assert pathlib.Path(tmp_path / 'scores').is_dir()


def test_patience_waits_for_min_steps(tmp_path, monkeypatch):
  """The same scripted evaluations with eval.min_steps=10: no stop at step 8."""
  values = iter([0.6, 0.8, 0.7, 0.65, 0.9])
  monkeypatch.setattr(
    scoring,
    'evaluate',
    lambda *a, **k: ({'val/phosphorylation/auroc': next(values)}, {'phosphorylation': 0.4}),
  )
  c = _scripted_config()
  c.eval.min_steps = 10
  trainer.train(c, tmp_path)
  info = ckpt.read_meta(tmp_path / 'final')['info']
  assert (info['step'], info['last_step'], info['stopped_early']) == (10, 10, False)


def test_freeze_then_unfreeze_trains_in_the_trainer(tmp_path):
  """The stage-2 grid's freeze recipe in the trainer: the encoder stays at its initial
  weights through `freeze_steps` (2) while the head trains, then moves. (It once crashed
  building shardings: a frozen parameter's optimizer state is a scalar placeholder.)"""
  import orbax.checkpoint as ocp
  from flax import nnx, traverse_util

  c = synthetic.get_config('test')
  c.optim.update(total_steps=4, warmup_steps=1, freeze=('encoder/.*',), freeze_steps=2)
  c.eval.update(every_steps=2, max_proteins=6)
  c.checkpoint.update(final='best', every_steps=2, keep_best=2)  # best/ keeps steps 2 and 4
  trainer.train(c, tmp_path)
  model_cfg, _ = ckpt.model_and_tokenizer(c)
  init = nnx.state(create_model(model_cfg, c.seed), nnx.Param).to_pure_dict()

  def at(step):
    tree = ocp.StandardCheckpointer().restore(
      tmp_path / 'checkpoints' / 'best' / str(step) / 'state'
    )
    return tree['model']

  def largest_change(part, params):
    # The checkpoint's model state holds RNG keys too: compare the parameters only.
    # (Orbax stores layer indices as strings.)
    old, new = traverse_util.flatten_dict(init[part]), traverse_util.flatten_dict(params[part])
    new = {tuple(map(str, k)): v for k, v in new.items()}
    diffs = [np.abs(np.asarray(v) - np.asarray(new[tuple(map(str, k))])) for k, v in old.items()]
    return max(float(d.max()) for d in diffs)

  two, four = at(2), at(4)
  # Frozen: no weight moved (beyond the last bit of a jitted vs an eager initialisation).
  assert largest_change('encoder', two) < 1e-6
  assert largest_change('ptm_head', two) > 1e-4  # while the head trained
  assert largest_change('encoder', four) > 1e-4  # unfrozen after step 2
  assert ckpt.read_meta(tmp_path / 'final')['info']['step'] in (2, 4)


def test_joint_data_keeps_the_main_taxa_and_repeats_the_main_dataset():
  """The joint arm's data (issue 25): `extra_exclude_taxa` drops taxa from the extra
  datasets only (the main dataset's proteins stay), `main_repeat` gives the mixing ratio."""
  c = synthetic.get_config('test')
  main, _ = sources.training_examples(c.data)
  c.data.extra = ('synthetic/source:train',)
  mixed, _ = sources.training_examples(c.data)
  source = len(synth.splits(60, 0, 'source', 'SRC')['train'])
  assert len(main) > 0 and source > 0 and len(mixed) == len(main) + source
  c.data.main_repeat = 3
  joint, info = sources.training_examples(c.data)
  assert len(joint) == 3 * len(main) + source and info['main_repeat'] == 3
  ids = [sources.text(ex['id']) for ex in joint]
  assert all(ids.count(sources.text(ex['id'])) == 3 for ex in main)
  assert not any('_main' in ex for ex in joint)
  # The extra part's taxon (-1) goes; the main dataset's own (559292) is listed too and
  # stays: only the extra parts are filtered.
  c.data.extra_exclude_taxa = (-1, 559292)
  joint, info = sources.training_examples(c.data)
  assert len(joint) == 3 * len(main)
  assert info['extra_taxa_removed'] == {'synthetic/source:train': source}
  c.data.main_repeat = 0
  with pytest.raises(UsageError, match='main_repeat=0'):
    configs.validate(c)
