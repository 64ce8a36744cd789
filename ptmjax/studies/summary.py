r"""Every encoder's stage comparison side by side (issue 25), from the `results.json` each
`ptmjax compare` wrote: one table per study, and first the regime each ran under
(selection metric, recipe choice, runs at the step cap, intervals), because numbers
chosen one way do not compare with numbers chosen another.

    python -m ptmjax.studies.summary results/compare_small_proteinbert \
      results/compare_small --out results/SUMMARY.md

Nothing here computes a new interval: every number is a study's own, so the summary
cannot disagree with the reports it points to.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

from ptmjax.studies.compare_stats import ARM_LABELS, MODELS, call

# The rows a reader looks at first: S/T phosphorylation (the target) and the
# lysine channels, where the stage question was open.
ROWS = ('phosphorylation:ST', 'ubiquitination', 'acetylation', 'succinylation')
BASELINES = {'logreg': 'window LR', 'window_composition': 'window + composition LR'}
# Issue 25's target on YAAM test, phosphorylation S/T pooled, for the best arm.
TARGET = {'auroc': 0.85, 'auprc': 0.40}
# The verdict table adds Y (few sites, but where the arms part most).
VERDICT_ROWS = ('phosphorylation:ST', 'phosphorylation:Y', *ROWS[1:])


def encoder_of(result: dict) -> str:
  """The study's config name and encoder family, from its recorded command."""
  m = re.search(r'compare:(\S+)', result.get('command', ''))
  config = m.group(1) if m else 'unknown'
  family = 'ProteinBERT' if config.endswith('-proteinbert') else 'transformer'
  return f'{family} (`compare:{config}`)'


def regime(result: dict) -> dict:
  """How a study chose what it reports: older studies lack the newer keys, and the
  defaults below are what the code did before they existed."""
  info = result['info']
  recipes = info.get('recipes', {})
  runs = info.get('runs', {})
  # Before `hit_cap` was recorded, a run that did not stop early ran to its cap.
  at_cap = sum(bool(r.get('hit_cap', not r.get('stopped_early', False))) for r in runs.values())
  if info.get('select_metric'):
    select = f'`{info["select_metric"]}`'
  else:
    select = f"`{info.get('stage1_check', {}).get('metric', '?')}` (each stage's default)"
  n_grid = len(recipes.get('recipes', {})) or 1
  if 'per_seed' in recipes:
    choice = f'{n_grid} recipes, every seed picks on its own validation'
  else:
    choice = f'{n_grid} recipes, the first seed picks for all'
  unit = 'test homology clusters' if info.get('resample') == 'clusters' else 'test proteins'
  if len(info['seeds']) == 1:
    intervals = f'{unit} only (one seed: the seed spread is not measured)'
  elif info.get('resample') == 'clusters':
    intervals = 'seed t + test homology clusters, Holm across rows'
  else:
    intervals = 'percentile bootstrap over seeds x test proteins, no correction across rows'
  return {
    'seeds': len(info['seeds']),
    'select': select,
    'recipes': choice,
    'at_cap': f'{at_cap} of {len(runs)}',
    'intervals': intervals,
    'git': info.get('git', '?'),
  }


def _called(d: dict) -> bool:
  return call(d) in ('better', 'worse')


def _diff(d: dict | None) -> str:
  if d is None:
    return 'n/a'
  lo, hi = d['auroc_ci']
  return f'{d["auroc"]:+.3f} [{lo:+.3f}, {hi:+.3f}]' + (' **called**' if _called(d) else '')


def best_arm(pooled: dict) -> str:
  """The arm with the best validation AUROC on the row (test data choose nothing)."""
  arms = pooled['arms']
  return max((m for m in MODELS if m in arms), key=lambda m: arms[m].get('val_auroc', 0.0))


def study_section(name: str, result: dict) -> list[str]:
  rows = [r for r in ROWS if r in result['results']]
  pooled = {r: result['results'][r]['views']['pooled'] for r in rows}
  arms = [m for m in MODELS if m in pooled[rows[0]]['arms']]
  lines = [f'## {encoder_of(result)}: `{name}`', '']
  lines += ['Test AUROC / AUPRC, pooled over candidate residues (seed means):', '']
  head = [*BASELINES.values(), *(ARM_LABELS[a] for a in arms)]
  lines += ['| row | ' + ' | '.join(head) + ' |', '|---' * (len(head) + 1) + '|']
  for r in rows:
    a = pooled[r]['arms']
    cells = [f'{a[k]["auroc"]:.3f} / {a[k]["auprc"]:.3f}' for k in (*BASELINES, *arms)]
    lines.append(f'| {r} | ' + ' | '.join(cells) + ' |')
  pairs = [f'{a}-single' for a in arms if a != 'single']
  lines += ['', 'Paired AUROC differences [95 % interval] (**called**: the study calls it):', '']
  head = [*pairs, 'best arm on validation - window LR']
  lines += ['| row | ' + ' | '.join(head) + ' |', '|---' * (len(head) + 1) + '|']
  for r in rows:
    d = pooled[r]['differences']
    best = best_arm(pooled[r])
    cells = [_diff(d.get(p)) for p in pairs] + [f'{best}: {_diff(d.get(f"{best}-logreg"))}']
    lines.append(f'| {r} | ' + ' | '.join(cells) + ' |')
  st = pooled.get('phosphorylation:ST')
  if st:
    best = best_arm(st)
    a = st['arms'][best]
    met = a['auroc'] >= TARGET['auroc'] and a['auprc'] >= TARGET['auprc']
    vs = st['differences'].get(f'{best}-logreg')
    lines += [
      '',
      f'Target (phosphorylation S/T, best arm on validation, AUROC >= {TARGET["auroc"]:.2f} '
      f'and AUPRC >= {TARGET["auprc"]:.2f}): {ARM_LABELS[best]} at {a["auroc"]:.3f} / '
      f'{a["auprc"]:.3f}, **{"met" if met else "not met"}**; against the window LR '
      f'{_diff(vs)}.',
    ]
  return [*lines, '']


def _short_verdict(d: dict | None, arm: str) -> str:
  if d is None:
    return 'n/a'
  words = {
    'none': 'none',
    'held': f'none after Holm (p {d.get("p_holm", 0.0):.2f})',
    'better': f'**{arm} better**',
    'worse': f'**{arm} worse**',
  }[call(d)]
  return f'{words}: {d["auroc"]:+.3f}'


def _study_head(name: str, result: dict) -> str:
  n = len(result['info']['seeds'])
  # One seed has no seed spread in its intervals: its calls cannot be final.
  return f'`{name}` (1 seed: provisional)' if n == 1 else f'`{name}` ({n} seeds)'


def verdicts_across(studies: dict[str, dict]) -> list[str]:
  """Each arm-vs-single verdict, study by study, so a reader sees which verdicts
  changed with the regime (and the encoder) without reading every report."""
  pairs = [f'{a}-single' for a in MODELS if a != 'single']
  lines = ['## Verdicts across studies', '']
  lines += [
    "Each study's own verdict on the pooled AUROC difference against single-stage: "
    '**better**/**worse** where that study calls it, "none" where its interval holds 0, '
    '"none after Holm" where the interval excludes 0 but the Holm-adjusted p does not pass '
    '(studies without Holm call on the interval alone).',
    '',
    '| row | pair | ' + ' | '.join(_study_head(n, s) for n, s in studies.items()) + ' |',
    '|---|---|' + '---|' * len(studies),
  ]
  for r in VERDICT_ROWS:
    for pair in pairs:
      diffs = [
        s['results'].get(r, {}).get('views', {}).get('pooled', {}).get('differences', {})
        for s in studies.values()
      ]
      if not any(pair in d for d in diffs):
        continue
      arm = pair.split('-')[0]
      cells = [_short_verdict(d.get(pair), arm) for d in diffs]
      lines.append(f'| {r} | {pair} | ' + ' | '.join(cells) + ' |')
  return [*lines, '']


def write(folders: list[pathlib.Path], out: pathlib.Path | None = None) -> str:
  studies = {f.name: json.loads((f / 'results.json').read_text()) for f in folders}
  lines = [
    '# The stage comparison, every encoder',
    '',
    "Generated by `python -m ptmjax.studies.summary` from each study's `results.json`; "
    "every number is the study's own (its `report.md` has the full tables, per-seed "
    'values and plots). Compare across encoders only where the regimes below agree.',
    '',
    '| study | encoder | seeds | selection metric | stage-2 recipe | runs ended at the step cap | '
    'intervals | git |',
    '|---|---|---|---|---|---|---|---|',
  ]
  for name, result in studies.items():
    g = regime(result)
    lines.append(
      f'| `{name}` | {encoder_of(result)} | {g["seeds"]} | {g["select"]} | {g["recipes"]} | '
      f'{g["at_cap"]} | {g["intervals"]} | `{g["git"]}` |'
    )
  lines.append('')
  for name, result in studies.items():
    lines += study_section(name, result)
  lines += verdicts_across(studies)
  text = '\n'.join(lines)
  if out is not None:
    out.write_text(text)
  return text


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('folders', nargs='+', type=pathlib.Path, help='study result folders')
  parser.add_argument('--out', type=pathlib.Path, help='markdown file (default: stdout)')
  args = parser.parse_args(argv)
  for f in args.folders:
    if not (f / 'results.json').is_file():
      print(
        f'{f}: no results.json (a folder `ptmjax compare` wrote its report to)', file=sys.stderr
      )
      return 2
  text = write(args.folders, args.out)
  if args.out is None:
    print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
