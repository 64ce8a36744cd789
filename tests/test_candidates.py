"""Candidates: one value for which residues each channel scores, against brute force."""

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
