"""The cross-encoder summary of the stage comparisons (`studies/summary.py`)."""

import json
import pathlib

from ptmjax.studies import summary

ROOT = pathlib.Path(__file__).resolve().parents[1]
STUDIES = ('compare_small_proteinbert', 'compare_small_transformer', 'compare_small')


def _arm(auroc, auprc, val):
  return {'auroc': auroc, 'auprc': auprc, 'val_auroc': val}


def _diff(x, lo, hi, **kw):
  return {'auroc': x, 'auroc_ci': [lo, hi], **kw}


def _study(tmp_path, name, command, info, two_minus_single):
  arms = {
    'logreg': _arm(0.80, 0.25, 0.80),
    'window_composition': _arm(0.81, 0.26, 0.81),
    'single': _arm(0.84, 0.35, 0.86),
    'two': _arm(0.86, 0.41, 0.87),
  }
  diffs = {'two-single': two_minus_single, 'two-logreg': _diff(0.06, 0.05, 0.07, p_holm=0.0)}
  pooled = {'arms': arms, 'differences': diffs}
  result = {
    'command': command,
    'info': {'seeds': [0, 1, 2], 'git': 'abc1234', 'runs': {}, **info},
    'results': {'phosphorylation:ST': {'views': {'pooled': pooled}}},
  }
  folder = tmp_path / name
  folder.mkdir()
  (folder / 'results.json').write_text(json.dumps(result))
  return folder


def test_summary_gives_each_encoder_its_table_and_the_regime_it_was_chosen_under(tmp_path):
  new = _study(
    tmp_path,
    'pb',
    'ptmjax compare --config compare:small-proteinbert',
    {
      'select_metric': 'val/mean/auroc',
      'resample': 'clusters',
      'recipes': {'per_seed': {}, 'recipes': {'base': {}, 'frozen': {}}},
      'runs': {'single/0': {'stopped_early': True, 'hit_cap': False}},
    },
    # Excludes 0 but fails Holm: not called.
    _diff(0.02, 0.001, 0.04, p_holm=0.3),
  )
  old = _study(
    tmp_path,
    'tf',
    'ptmjax compare --config compare:small',
    {
      'stage1_check': {'metric': 'val/phosphorylation/auroc'},
      'recipes': {'recipes': {'base': {}}},
      'runs': {'single/0': {'stopped_early': False}, 'two/0': {'stopped_early': True}},
    },
    _diff(0.02, 0.001, 0.04),
  )
  text = summary.write([new, old], tmp_path / 'S.md')
  assert (tmp_path / 'S.md').read_text() == text
  assert '## ProteinBERT (`compare:small-proteinbert`): `pb`' in text
  assert '## transformer (`compare:small`): `tf`' in text
  regime_new, regime_old = (line for line in text.splitlines() if line.startswith('| `'))
  assert '`val/mean/auroc`' in regime_new and 'every seed picks' in regime_new
  assert '| 0 of 1 |' in regime_new and 'homology clusters, Holm' in regime_new
  # The old study's defaults: phosphorylation selection, first seed picks, runs at cap.
  assert "`val/phosphorylation/auroc` (each stage's default)" in regime_old
  assert 'the first seed picks' in regime_old and '| 1 of 2 |' in regime_old
  assert 'no correction across rows' in regime_old
  new_part, old_part = text.split('## transformer')
  assert '+0.020 [+0.001, +0.040] |' in new_part  # Holm holds it back
  assert '+0.020 [+0.001, +0.040] **called** |' in old_part
  # The best arm on validation (two) against the target and the window regression.
  assert '0.860 / 0.410, **met**' in new_part


def test_summary_says_a_one_seed_study_has_no_seed_spread(tmp_path):
  info = {'resample': 'clusters', 'select_metric': 'val/mean/auroc', 'seeds': [0]}
  one = _study(tmp_path, 'one', 'ptmjax compare --config compare:small', info, _diff(0, -1, 1))
  (line,) = (x for x in summary.write([one]).splitlines() if x.startswith('| `one`'))
  assert '| 1 |' in line and 'one seed: the seed spread is not measured' in line


def test_summary_refuses_a_folder_without_results(tmp_path, capsys):
  assert summary.main([str(tmp_path)]) == 2
  assert 'no results.json' in capsys.readouterr().err


def test_committed_summary_is_what_the_code_writes_from_the_committed_studies():
  folders = [ROOT / 'results' / s for s in STUDIES]
  committed = (ROOT / 'results' / 'SUMMARY.md').read_text()
  assert committed == summary.write(folders)


def test_verdict_table_shows_a_verdict_that_changed_between_regimes(tmp_path):
  new_info = {'resample': 'clusters', 'select_metric': 'val/mean/auroc'}
  held = _diff(0.02, 0.001, 0.04, p_holm=0.3)
  new = _study(tmp_path, 'new', 'ptmjax compare --config compare:small', new_info, held)
  old = _study(
    tmp_path, 'old', 'ptmjax compare --config compare:small', {}, _diff(0.02, 0.001, 0.04)
  )
  one_info = {**new_info, 'seeds': [0]}
  one = _study(tmp_path, 'one', 'ptmjax compare --config compare:small', one_info, _diff(0, -1, 1))
  table = summary.write([new, old, one]).split('## Verdicts across studies')[1]
  assert '| `new` (3 seeds) | `old` (3 seeds) | `one` (1 seed: provisional) |' in table
  (row,) = (x for x in table.splitlines() if x.startswith('| phosphorylation:ST | two-single'))
  # The same interval: held back by Holm in the new regime, called in the old one.
  assert row == (
    '| phosphorylation:ST | two-single | none after Holm (p 0.30): +0.020 '
    '| **two better**: +0.020 | none: +0.000 |'
  )
