"""Candidates: one value for which residues each channel scores, against brute force."""

import dataclasses

import numpy as np
import pytest

from ptmjax.data import ptm_types, synthetic
from ptmjax.data import tokenizer as tok
from ptmjax.data.candidates import Candidates


def _examples(n=80):
  s = synthetic.splits(n, seed=0, variant='target', prefix='T')['train']
  return [{**s[i], 'sequence': s[i]['sequence'].decode()} for i in range(len(s))]


def test_from_config_forms():
  assert Candidates.from_config('phosphorylation=STY, acetylation=k').to_json() == {
    'phosphorylation': 'STY',
    'acetylation': 'K',
  }
  assert Candidates.from_config('').to_json() == {} and Candidates.from_config(None).to_json() == {}
  assert Candidates.from_config({'acetylation': 'K'}).get('acetylation') == 'K'
  with pytest.raises(ValueError, match='unknown channels'):
    Candidates.from_config('phosphorilation=STY')
  with pytest.raises(ValueError, match='channel=RESIDUES'):
    Candidates.from_config('phosphorylation')
  with pytest.raises(ValueError, match='needs the training examples'):
    Candidates.from_config('auto')


def test_json_round_trip_reads_what_earlier_versions_wrote():
  # run_info.json / ptmjax_model.json of earlier versions: a plain {channel: residues}.
  old = {'phosphorylation': 'STY', 'acetylation': 'K', 'nt_acetylation': 'AMST'}
  c = Candidates.from_json(old)
  assert c.to_json() == old and Candidates.from_json(c.to_json()) == c
  assert Candidates.from_json(None) == Candidates()


def test_derive_against_brute_force():
  exs = _examples()
  c = Candidates.derive(exs, min_share=0.005, min_sites=3)
  # Raw TFDS-style bytes give the same answer.
  assert Candidates.derive([{**e, 'sequence': e['sequence'].encode()} for e in exs]) == c
  for name in ptm_types.PTM_NAMES:
    col = ptm_types.INDEX[name]
    letters = ''.join(ex['sequence'] for ex in exs)
    labels = np.concatenate([ex['labels'][:, col] for ex in exs])
    sites = [a for a, y in zip(letters, labels, strict=True) if y == 1]
    if not sites:
      assert c.get(name) is None
      continue
    expect = sorted({a for a in sites if sites.count(a) >= max(3, 0.005 * len(sites))})
    assert c.get(name) == (''.join(expect) or None), name
  # The planted rules: phosphorylation on S/T (/Y), acetylation on K.
  assert set(c.get('phosphorylation')) <= set('STY') and c.get('acetylation') == 'K'


def test_masks_tables_and_counts_agree():
  c = Candidates({'phosphorylation': 'STY', 'acetylation': 'K'})
  residues = np.array(list('MKSTYAKG'))
  m = c.mask(residues)
  assert m.shape == (8, ptm_types.NUM_TYPES)
  np.testing.assert_array_equal(m[:, ptm_types.INDEX['phosphorylation']], [0, 0, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(m[:, ptm_types.INDEX['acetylation']], [0, 1, 0, 0, 0, 0, 1, 0])
  assert m[:, ptm_types.INDEX['methylation']].all()  # no entry: every residue
  t = tok.esm()
  table = c.token_table(t)
  ids = [t.id(a) for a in residues]
  np.testing.assert_array_equal(table[ids], m)  # the loss's table = the metrics' mask
  assert not table[[t.cls_id, t.pad_id, t.eos_id]].any()

  exs = _examples(30)
  pos, neg = c.label_counts(exs)
  for name in ('phosphorylation', 'acetylation', 'methylation'):
    col = ptm_types.INDEX[name]
    p = n = 0
    for ex in exs:
      keep = c.residue_mask(np.array(list(ex['sequence'])), name)
      p += int((ex['labels'][keep, col] == 1).sum())
      n += int((ex['labels'][keep, col] == 0).sum())
    assert (pos[col], neg[col]) == (p, n), name


# --- channels limited to the protein's first positions (N-terminal acetylation) ----------
NT = ptm_types.INDEX['nt_acetylation']


def _nt_examples(n=24, seed=0):
  """Proteins with N-terminal acetylation at position 1 or 2 (sometimes also an internal
  one, as YAAM has), phosphorylation on some S/T/Y; every other label known 0."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    # Met, then A, S or T (what N-terminal acetyltransferases act on once Met is cut).
    rest = ''.join(rng.choice(list('ACDEGKLMSTVY'), int(rng.integers(20, 90))))
    seq = 'M' + 'AST'[i // 2 % 3] + rest
    labels = np.zeros((len(seq), ptm_types.NUM_TYPES), np.int8)
    labels[int(i % 2), NT] = 1  # Met kept (position 1) or removed (position 2)
    if i % 5 == 0:
      labels[len(seq) // 2, NT] = 1  # an 'internal' N-terminal site
    sty = [k for k, a in enumerate(seq) if a in 'STY']
    labels[sty[::3], ptm_types.INDEX['phosphorylation']] = 1
    out.append({'id': f'P{i}', 'sequence': seq, 'labels': labels})
  return out


def test_position_limits_in_config_and_json():
  c = Candidates.from_config('phosphorylation=STY,nt_acetylation=tsma@2')
  assert c.get('nt_acetylation') == 'AMST' and c.limit('nt_acetylation') == 2
  assert c.limit('phosphorylation') == 0
  assert c.to_json() == {'phosphorylation': 'STY', 'nt_acetylation': 'AMST@2'}
  assert Candidates.from_json(c.to_json()) == c
  every = Candidates.from_config('nt_acetylation=@1')  # any residue, position 1 only
  assert every.get('nt_acetylation') is None and every.to_json() == {'nt_acetylation': '@1'}
  np.testing.assert_array_equal(
    every.residue_mask(np.array(list('MKS')), 'nt_acetylation', np.arange(3)), [1, 0, 0]
  )
  for bad in ('nt_acetylation=AM@0', 'nt_acetylation=AM@x', 'nt_acetylation=AM@'):
    with pytest.raises(ValueError, match='RESIDUES@N'):
      Candidates.from_config(bad)


def test_derive_limits_n_terminal_channels_and_counts_the_sites_beyond():
  exs = _nt_examples()
  c = Candidates.derive(exs)
  assert c.limit('nt_acetylation') == 2 and c.limit('phosphorylation') == 0
  # Letters from the sites at positions 1-2 only (the internal ones would add others).
  assert c.get('nt_acetylation') == 'AMST'
  assert Candidates.derive(exs, min_sites=1).get('nt_acetylation') == 'AMST'
  internal = sum(int(ex['labels'][2:, NT].sum()) for ex in exs)
  assert internal > 0 and c.outside(exs) == {'nt_acetylation': internal}
  # The mask needs positions for a limited channel: none would silently score everywhere.
  with pytest.raises(ValueError, match='positions 1-2 only'):
    c.mask(np.array(list('MSK')))
  pos, neg = c.label_counts(exs)
  cand = [ex['sequence'][:2] for ex in exs]
  assert pos[NT] == len(exs)
  assert pos[NT] + neg[NT] == sum(sum(a in c.get('nt_acetylation') for a in s) for s in cand)


def test_flat_positions_and_metrics_score_only_the_first_positions():
  from ptmjax.evaluation import report

  exs = _nt_examples()
  flat = report.Flat.from_examples([e['sequence'] for e in exs], [e['labels'] for e in exs])
  expect = np.concatenate([np.arange(len(e['sequence'])) for e in exs])
  np.testing.assert_array_equal(flat.positions, expect)
  c = Candidates.derive(exs)
  keep, y, _ = report.channel_targets(flat, np.zeros(flat.labels.shape), c, 'nt_acetylation')
  assert keep.sum() == sum(
    sum(a in c.get('nt_acetylation') for a in e['sequence'][:2]) for e in exs
  )
  assert (flat.positions[keep] < 2).all() and y.sum() == len(exs)


def test_the_loss_scores_what_the_metrics_score_in_cropped_windows():
  """The train step's scored entries (position limits via the pipeline's residue_index,
  crops starting mid-protein) = `Candidates.mask` on the same residues, brute force."""
  import jax
  from flax import nnx

  from ptmjax.configs import yaam
  from ptmjax.data import pipeline
  from ptmjax.models import ModelConfig, create_model
  from ptmjax.training import optimizer, steps
  from ptmjax.training.loss_spec import LossSpec

  exs = _nt_examples()
  c = Candidates.derive(exs)
  t = tok.esm()
  pipe = pipeline.Pipeline(exs, t, batch_size=4, max_len=32, mode='pack', crop='tile')
  config = yaam.get_config('small')
  config.data.update(batch_size=4, max_len=32, mode='pack', max_segments=8)
  config.loss.update(count_weight=0.0, mlm_weight=0.0)
  cfg = ModelConfig(num_layers=1, embed_dim=16, num_heads=2, mlp_dim=32)
  model = create_model(cfg, 0)
  opt = nnx.Optimizer(
    model, optimizer.make_optimizer(config.optim, nnx.state(model, nnx.Param), 1), wrt=nnx.Param
  )
  graphdef, state = nnx.split((model, opt))
  channel_mask = np.zeros(ptm_types.NUM_TYPES, np.float32)
  channel_mask[[NT, ptm_types.INDEX['phosphorylation']]] = 1
  spec = LossSpec.from_config(config, t, c, np.ones(ptm_types.NUM_TYPES), channel_mask)
  assert spec.position_limits is not None
  limited = jax.jit(steps.make_train_step(graphdef, spec, t))
  unlimited = jax.jit(
    steps.make_train_step(graphdef, dataclasses.replace(spec, position_limits=None), t)
  )
  mid_protein = total = everywhere = 0
  for b in range(pipe.steps_per_epoch()):
    batch = pipe.batch(0, b)
    idx = batch['residue_index']
    mid_protein += int((idx[batch['positions'] == 1] > 0).sum())  # a crop's first residue
    expect = 0
    for r in range(len(idx)):
      for s in np.unique(batch['segment_ids'][r][batch['segment_ids'][r] > 0]):
        tokens = (batch['segment_ids'][r] == s) & (idx[r] >= 0)
        ex = exs[[e['sequence'] for e in exs].index(_source_of(exs, batch, r, tokens, t))]
        letters = np.array([t.vocab[k] for k in batch['tokens'][r][tokens]])
        assert ''.join(letters) == ex['sequence'][idx[r][tokens][0] :][: len(letters)]
        m = c.mask(letters, idx[r][tokens]) & (batch['labels'][r][tokens] >= 0) & (channel_mask > 0)
        expect += int(m.sum())
    _, aux = limited(state, batch, 0)
    assert int(aux['scored']) == expect
    total += expect
    _, aux = unlimited(state, batch, 0)
    everywhere += int(aux['scored'])
  assert mid_protein > 0  # the check covered crops that start inside a protein
  assert everywhere > total  # without the limit, A/M/S/T everywhere would count


def _source_of(exs, batch, r, tokens, t):
  """The example whose sequence holds this segment's residues at its residue_index."""
  letters = ''.join(t.vocab[k] for k in batch['tokens'][r][tokens])
  start = int(batch['residue_index'][r][tokens][0])
  hits = [e['sequence'] for e in exs if e['sequence'][start : start + len(letters)] == letters]
  assert hits
  return hits[0]


def test_predict_leaves_positions_past_the_limit_unscored(tmp_path):
  from ptmjax import checkpoint as ckpt
  from ptmjax import predict
  from ptmjax.models import ModelConfig, create_model

  model = create_model(ModelConfig(num_layers=1, embed_dim=16, num_heads=2, mlp_dim=32), seed=0)
  cand = Candidates.from_config('phosphorylation=STY,nt_acetylation=AMST@2')
  info = {'channels': ['phosphorylation', 'nt_acetylation'], 'candidates': cand.to_json()}
  ckpt.save_model(tmp_path / 'm', model, tok.esm(), info)
  p = predict.Predictor(tmp_path / 'm')
  seq = 'MSKSATMSY'
  out = p.predict({'P': seq})['P']
  nt = p.channels.index('nt_acetylation')
  np.testing.assert_array_equal(~np.isnan(out[:, nt]), [1, 1, 0, 0, 0, 0, 0, 0, 0])
  phos = p.channels.index('phosphorylation')
  np.testing.assert_array_equal(~np.isnan(out[:, phos]), [a in 'STY' for a in seq])
