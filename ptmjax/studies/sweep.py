r"""Random or grid hyper-parameter search over `ptmjax train` runs, resumable.

    ptmjax sweep --config sweep:small --workdir runs/sweep --config.train.data.data_dir=tfds_data
    python -m ptmjax.studies.sweep --config sweep:small --workdir runs/sweep ...

The plan (every trial's values) is drawn up front from `seed` and written to
WORKDIR/plan.json, so an interrupted sweep resumes exactly: finished trials are
read back, the interrupted one resumes from its own checkpoint, the rest run.
Why not optuna: its adaptive samplers need the previous trials' results before
proposing the next, which breaks this "same plan, resume anywhere" property, and
for a dozen trials over six parameters random search is as good (Bergstra &
Bengio, 2012); a fixed plan also makes two sweeps directly comparable.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import math
import pathlib
import sys

import ml_collections
import numpy as np

from ptmjax import paths
from ptmjax.errors import UserError
from ptmjax.run_dir import RunDir
from ptmjax.studies import runs

log = logging.getLogger('sweep')

# Short names for the hyper-parameters users search most; any other train-config
# path can be given with '__' for '.'.
PATHS = {
  'lr': 'optim.lr',
  'batch_size': 'data.batch_size',
  'weight_decay': 'optim.weight_decay',
  'label_smoothing': 'loss.label_smoothing',
  'pos_weight': 'loss.pos_weight',
  'warmup_steps': 'optim.warmup_steps',
}
LOG_SCALE = ('lr', 'weight_decay')


class SweepError(UserError):
  pass


def _value(text: str):
  text = text.strip()
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return text


def parse_space(space) -> dict[str, tuple]:
  """{name: ('choice', [values]) | ('log'|'uniform', lo, hi)}, '' entries dropped."""
  out = {}
  for name, spec in sorted(dict(space).items()):
    spec = str(spec).strip()
    if not spec:
      continue
    kind, _, rest = spec.partition(':')
    if kind in ('log', 'uniform') and rest:
      try:
        lo, hi = (float(x) for x in rest.split(':'))
      except ValueError:
        raise SweepError(f'space.{name}={spec!r}: expected {kind}:LO:HI') from None
      if not lo < hi or (kind == 'log' and lo <= 0):
        raise SweepError(f'space.{name}={spec!r}: need 0 < LO < HI' if kind == 'log' else
                         f'space.{name}={spec!r}: need LO < HI')  # fmt: skip
      out[name] = (kind, lo, hi)
    else:
      out[name] = ('choice', [_value(v) for v in spec.split(',') if v.strip()])
  return out


def config_path(name: str) -> str:
  return PATHS.get(name, name.replace('__', '.'))


def plan(config) -> list[dict]:
  """Every trial's values, in order; a longer random plan extends a shorter one."""
  space = parse_space(config.space)
  if not space:
    raise SweepError('the search space is empty: set at least one config.space entry')
  if config.method == 'grid':
    ranges = [k for k, v in space.items() if v[0] != 'choice']
    if ranges:
      raise SweepError(f'grid search needs listed values, not ranges, for {ranges}')
    names = list(space)
    trials = [
      dict(zip(names, vs, strict=True)) for vs in itertools.product(*(space[n][1] for n in names))
    ]
    return trials[: config.trials] if config.trials else trials
  if config.method != 'random':
    raise SweepError(f'method {config.method!r}: use random or grid')
  if config.trials <= 0:
    raise SweepError('random search needs trials > 0')
  rng = np.random.default_rng(config.seed)
  trials = []
  for _ in range(config.trials):
    trial = {}
    for name, spec in space.items():  # sorted: the draw order is fixed
      u = rng.random()
      if spec[0] == 'choice':
        trial[name] = spec[1][min(int(u * len(spec[1])), len(spec[1]) - 1)]
      elif spec[0] == 'log':
        lo, hi = math.log(spec[1]), math.log(spec[2])
        trial[name] = float(f'{math.exp(lo + u * (hi - lo)):.3g}')
      else:
        trial[name] = float(f'{spec[1] + u * (spec[2] - spec[1]):.3g}')
    trials.append(trial)
  return trials


def trial_config(config, values: dict) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(config.train.to_dict())
  for name, v in values.items():
    *parents, leaf = config_path(name).split('.')
    node = c
    for p in parents:
      if p not in node:
        raise SweepError(f'space.{name}: the train config has no {config_path(name)!r}')
      node = node[p]
    if leaf not in node:
      raise SweepError(f'space.{name}: the train config has no {config_path(name)!r}')
    old = node[leaf]
    # pos_weight is 'auto' or a number: the trainer reads a string either way.
    node[leaf] = str(v) if isinstance(old, str) else type(old)(v) if old is not None else v
  if c.optim.warmup_steps >= c.optim.total_steps:
    c.optim.warmup_steps = max(0, c.optim.total_steps - 1)
  return c


def _read_metrics(workdir: pathlib.Path, metric: str) -> dict:
  """The last evaluation and the best value of `metric` over all evaluations."""
  evals = [row for row in RunDir(workdir).metric_rows() if metric in row]
  if not evals:
    return {'final': {}, 'best': math.nan, 'best_step': None}
  values = [r[metric] for r in evals]
  i = int(np.nanargmax(values)) if not all(map(math.isnan, values)) else len(values) - 1
  return {'final': evals[-1], 'best': values[i], 'best_step': evals[i]['step']}


def run_trial(config, workdir: pathlib.Path, index: int, values: dict) -> dict:
  tdir = workdir / f'trial_{index:03d}'
  done = tdir / 'result.json'
  if done.exists():
    result = json.loads(done.read_text())
    if result['values'] != values:
      raise SweepError(f'{done} was run with {result["values"]}, the plan now says {values}')
    if result['status'] == 'ok':
      return result
    # A failed trial runs again: its cause may have been fixed since (it resumes from
    # its own last checkpoint, if it got that far).
    log.info('trial %d failed before (%s); running it again', index, result['error'])
    if runs.is_primary():
      done.unlink()
  c = trial_config(config, values)
  status, error = 'ok', ''
  try:
    runs.train(c, tdir, f'trial {index:03d}')
  except (FloatingPointError, ValueError, RuntimeError) as e:
    # One diverging or mis-sized trial must not end the sweep; it is reported.
    # (trainer.Preempted propagates: the next invocation resumes this trial.)
    status, error = 'failed', f'{type(e).__name__}: {e}'
    log.warning('trial %d failed: %s', index, error)
  runs.sync(f'trial {index} ended')  # process 0 has closed its metrics.jsonl
  seconds = runs.read_timing(tdir)['seconds']  # summed over resumed invocations
  metrics = _read_metrics(tdir, config.metric) if RunDir(tdir).metrics.exists() else {}
  result = {
    'trial': index,
    'values': values,
    'status': status,
    'error': error,
    'metric': metrics.get('final', {}).get(config.metric, math.nan),
    'best': metrics.get('best', math.nan),
    'best_step': metrics.get('best_step'),
    'final': metrics.get('final', {}),
    'seconds': seconds,
    'final_model': str(RunDir(tdir).final) if runs.is_finished(tdir) else '',
  }
  runs.write_text(done, json.dumps(result, indent=1) + '\n')
  return result


def _sort_key(r):
  m = r['metric']
  return (r['status'] != 'ok', -m if m == m else math.inf)


def write_results(workdir: pathlib.Path, config, results: list[dict], provenance: dict) -> None:
  if not runs.is_primary():
    return
  command = provenance.get('command', '')
  results = sorted(results, key=_sort_key)
  names = list(parse_space(config.space))
  ok = [r for r in results if r['status'] == 'ok' and r['metric'] == r['metric']]
  channel = config.metric.split('/')[1] if config.metric.count('/') >= 2 else ''
  extra = [m for m in (f'val/{channel}/auroc', 'val/any/auroc') if m != config.metric]
  lines = [
    f'# Hyper-parameter sweep ({config.method}, {len(results)} trials)',
    '',
    f'Command: `{command}`' if command else '',
    '',
    f'Code: `{provenance.get("git", "unknown")}`; machine: {provenance.get("machine", "unknown")}.',
    '',
    f'Sorted by the last validation `{config.metric}` of each trial (larger is better); '
    f'"best" is the best value over its evaluations, at that step. These are validation '
    f'numbers chosen on validation, so the top one is optimistic: confirm the chosen '
    f'setting on the test split (e.g. with `ptmjax compare`).',
    '',
  ]
  if results and len(ok) < len(results):
    lines += [f'{len(results) - len(ok)} trial(s) failed or gave no metric (listed last).', '']
  header = ['rank', 'trial', *names, config.metric, 'best (step)', *extra, 'minutes', 'status']
  lines += ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for rank, r in enumerate(results, 1):
    f = r.get('final', {})
    row = [
      str(rank),
      f'{r["trial"]:03d}',
      *(
        f'{r["values"][n]:.3g}' if isinstance(r['values'][n], float) else str(r['values'][n])
        for n in names
      ),  # fmt: skip
      f'{r["metric"]:.4f}',
      f'{r["best"]:.4f} ({r["best_step"]})',
      *(f'{f[m]:.4f}' if m in f else '-' for m in extra),
      f'{r["seconds"] / 60:.1f}',
      r['status'] if r['status'] == 'ok' else f'failed: {r["error"][:80]}',
    ]
    lines.append('| ' + ' | '.join(row) + ' |')
  if ok:
    top = ok[0]
    overrides = ' '.join(f'--config.{config_path(n)}={v}' for n, v in top['values'].items())
    lines += [
      '',
      f'Best: trial {top["trial"]:03d}, {config.metric} = {top["metric"]:.4f}; its model: '
      f'`{top["final_model"]}`. Its values as train overrides:',
      '',
      f'    {overrides}',
    ]
    if len(ok) > 1:
      spread = [r['metric'] for r in ok]
      lines += [
        '',
        f'Spread over trials: {min(spread):.4f} .. {max(spread):.4f} (median '
        f'{float(np.median(spread)):.4f}).',
      ]
  lines.append('\n![metric against each hyper-parameter](sweep.png)\n' if ok else '')
  runs.write_text(workdir / 'results.md', '\n'.join(lines) + '\n')
  runs.write_text(
    workdir / 'results.json',
    json.dumps(
      {'metric': config.metric, 'command': command, 'provenance': provenance, 'trials': results},
      indent=1,
    )
    + '\n',
  )
  if ok:
    _plot(workdir / 'sweep.png', config.metric, names, ok)


def _plot(path, metric, names, results):
  import matplotlib
  import matplotlib.ticker

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  cols = min(3, len(names))
  rows = math.ceil(len(names) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
  y = [r['metric'] for r in results]
  for ax, name in zip(axes.flat, names, strict=False):
    xs = [r['values'][name] for r in results]
    if all(isinstance(x, (int, float)) for x in xs):
      ax.scatter(xs, y, s=25)
      if name in LOG_SCALE and min(xs) > 0:
        ax.set_xscale('log')
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # unreadable overlap
    else:  # categorical, e.g. pos_weight='auto'
      cats = sorted({str(x) for x in xs})
      ax.scatter([cats.index(str(x)) for x in xs], y, s=25)
      ax.set_xticks(range(len(cats)), cats)
    ax.set_xlabel(name)
    ax.set_ylabel(metric.removeprefix('val/'))
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(names) :]:
    ax.axis('off')
  fig.suptitle(f'{len(results)} trials: validation {metric.removeprefix("val/")}')
  fig.tight_layout()
  buffer = io.BytesIO()  # matplotlib writes only local files by name; this may be gs://
  fig.savefig(buffer, format='png', dpi=110)
  plt.close(fig)
  runs.write_bytes(path, buffer.getvalue())


def run(config, workdir, command: str = '') -> pathlib.Path:
  """Runs (or resumes) every planned trial; returns WORKDIR/results.md."""
  provenance = runs.provenance(command)  # the code that runs the trials
  workdir = paths.as_path(workdir, 'work dir')
  workdir.mkdir(parents=True, exist_ok=True)
  trials = plan(config)
  plan_file = workdir / 'plan.json'
  if plan_file.exists():
    old = json.loads(plan_file.read_text())
    n = min(len(old['trials']), len(trials))
    if old['trials'][:n] != trials[:n]:
      raise SweepError(
        f'{workdir} holds a sweep with a different plan (space, method or seed changed); '
        'use a new --workdir, or restore the old settings to resume it'
      )
  runs.write_text(
    plan_file,
    json.dumps(
      {'space': dict(config.space), 'method': config.method, 'seed': config.seed, 'trials': trials},
      indent=1,
    )
    + '\n',  # fmt: skip
  )
  runs.write_text(workdir / 'sweep_config.json', config.to_json_best_effort(indent=2) + '\n')
  results = []
  for i, values in enumerate(trials):
    log.info('trial %d/%d: %s', i + 1, len(trials), values)
    print(f'trial {i + 1}/{len(trials)} {values}', flush=True)
    r = run_trial(config, workdir, i, values)
    results.append(r)
    last = results[-3:]
    if len(last) == 3 and all(x['status'] == 'failed' for x in last):
      if len({x['error'] for x in last}) == 1:  # not the hyper-parameters: the set-up
        write_results(workdir, config, results, provenance)
        raise SweepError(f'three trials in a row failed with {last[0]["error"]}')
    print(f'  -> {config.metric} {r["metric"]:.4f} ({r["status"]}, {r["seconds"]:.0f} s)')
    write_results(workdir, config, results, provenance)  # a partial table while it runs
  runs.sync('sweep results written')  # every process reads results.json after this
  return workdir / 'results.md'


def run_from_args(args, overrides) -> int:
  """`ptmjax sweep` and `python -m ptmjax.studies.sweep`: --config, --workdir, overrides."""
  from ptmjax import commands

  config, command = commands.study_config('sweep', args, overrides)
  try:
    path = run(config, args.workdir, command)
  except SweepError as e:
    print(f'ptmjax sweep: {e}', file=sys.stderr)
    return 2
  print(f'results: {path}')
  trials = json.loads((path.parent / 'results.json').read_text())['trials']
  failed = [r['trial'] for r in trials if r['status'] != 'ok']
  if failed:  # a wrapper or CI must not read a sweep with failed trials as a success
    print(f'ptmjax sweep: {len(failed)} of {len(trials)} trials failed: {failed}', file=sys.stderr)
    return 1
  return 0


def main(argv=None) -> int:
  from ptmjax import commands

  return commands.study_main(
    'python -m ptmjax.studies.sweep', run_from_args, __doc__, argv, 'sweep:small'
  )


if __name__ == '__main__':
  sys.exit(main())
