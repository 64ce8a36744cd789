r"""Padding vs length bucketing vs packing, on the real YAAM and ptmDB length distributions.

    ptmjax bench packing [--max-len 512] [--batch 16] [--steps 20] [--smoke]

For each dataset and batch mode of the training pipeline (`ptmjax.data.pipeline`):

  pad     one protein per row, padded to max_len (the naive baseline)
  bucket  one protein per row, similar lengths together, padded to a multiple of 64
  pack    several proteins per row (first-fit, segment ids), rows of max_len

the share of real tokens over a whole epoch (from the epoch's plan), and the
effective training speed: real residues per second over `--steps` training
steps of the `small` model (the trainer's jitted step), with every batch shape
compiled beforehand (compile time reported apart). Writes OUT/packing.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from benchmarks import common

CANDIDATES = {'phosphorylation': 'STY', 'ubiquitination': 'K', 'acetylation': 'K'}
MODES = ('pad', 'bucket', 'pack')


def epoch_stats(pipe) -> dict:
  special = pipe.tokenizer.num_special
  plans = pipe.plan(0)
  real = sum(n + special for p in plans for row in p.rows for _, _, n in row)
  total = sum(len(p.rows) * p.length for p in plans)
  return {
    'steps_per_epoch': len(plans),
    'real_token_share': real / total,
    'residues_per_epoch': sum(n for p in plans for row in p.rows for _, _, n in row),
    'shapes': sorted({p.length for p in plans}),
  }


def measure(pipe, size: str, steps: int) -> dict:
  """Effective residues/s over the epoch's first `steps` batches, shapes compiled first."""
  plans = pipe.plan(0)[:steps]
  batches = [pipe.assemble(p.rows, p.length) for p in plans]
  config = common.train_config(pipe.batch_size, pipe.max_len, pipe.mode)
  step = common.JaxTrainStep(common.model_config(size), config, CANDIDATES)
  first = {}
  t = time.perf_counter()
  for b in batches:  # one call per shape: compilation, kept out of the timing
    if b['tokens'].shape not in first:
      first[b['tokens'].shape] = step(step.put(b))
  compile_s = time.perf_counter() - t
  device = [step.put(b) for b in batches]
  times = []
  for b in device:
    t = time.perf_counter()
    step(b)
    times.append(time.perf_counter() - t)
  residues = sum(int(np.sum(b['segment_ids'] > 0)) for b in batches)
  residues -= pipe.tokenizer.num_special * sum(
    int(np.max(b['segment_ids'], axis=1).sum()) for b in batches
  )
  return {
    'timed_steps': len(times),
    'seconds': sum(times),
    'residues_per_s': residues / sum(times),
    'compile_and_first_steps_s': compile_s,
    'compiled_shapes': len(first),
  }


def main(argv=None) -> int:
  from ptmjax.data import pipeline
  from ptmjax.data import tokenizer as tok

  p = argparse.ArgumentParser(prog='ptmjax bench packing', description=__doc__.splitlines()[0])
  p.add_argument('--datasets', default='yaam,ptmdb')
  p.add_argument('--max-len', type=int, default=512)
  p.add_argument('--batch', type=int, default=16, help='rows per batch')
  p.add_argument('--steps', type=int, default=20, help='timed training steps per mode')
  p.add_argument('--size', default='small', help=f'model size, of {list(common.SIZES)}')
  p.add_argument('--data', default=None, help='the shared data folder (../shared/data)')
  p.add_argument('--out', default='runs/bench')
  p.add_argument('--smoke', action='store_true', help='seconds: YAAM, tiny model, 2 steps')
  args = p.parse_args(argv)
  if args.smoke:
    args.datasets, args.size, args.steps, args.max_len, args.batch = 'yaam', 'tiny', 2, 128, 4

  data = common.shared_data(args.data)
  rows = []
  for name in args.datasets.split(','):
    proteins = common.load_proteins(name, data)
    lengths = np.array([len(x['sequence']) for x in proteins])
    for mode in MODES:
      pipe = pipeline.Pipeline(
        proteins, tok.esm(), batch_size=args.batch, max_len=args.max_len, mode=mode
      )
      row = {'dataset': name, 'proteins': len(proteins), 'mode': mode, **epoch_stats(pipe)}
      row['median_length'] = int(np.median(lengths))
      row.update(measure(pipe, args.size, args.steps))
      row['epoch_s_estimate'] = row['steps_per_epoch'] * row['seconds'] / row['timed_steps']
      print({k: v for k, v in row.items() if k != 'shapes'}, flush=True)
      rows.append(row)
  for r in rows:  # speed-up over padding to max_len, same dataset
    base = next(x for x in rows if x['dataset'] == r['dataset'] and x['mode'] == 'pad')
    r['speedup_over_pad'] = r['residues_per_s'] / base['residues_per_s']

  table = common.md_table(
    ['dataset', 'mode', 'real tokens', 'steps / epoch', 'residues/s', 'vs pad', 'epoch (est.)'],
    [[f'{r["dataset"]} ({r["proteins"]:,} proteins, median {r["median_length"]} aa)', r['mode'],
      f'{100 * r["real_token_share"]:.1f} %', r['steps_per_epoch'], f'{r["residues_per_s"]:,.0f}',
      f'{r["speedup_over_pad"]:.2f}x', f'{r["epoch_s_estimate"] / 60:.1f} min']
     for r in rows],
  )  # fmt: skip
  notes = [
    f'Rows of {args.max_len} tokens, {args.batch} rows per batch, `{args.size}` model, '
    f'{args.steps} timed steps per mode (every shape compiled first). Real tokens: over the '
    'whole epoch plan; proteins longer than the window are cropped (one window each).'
  ]
  common.write(
    args.out, 'packing',
    {'command': 'ptmjax bench packing ' + ' '.join(sys.argv[1:] if argv is None else argv),
     'smoke': args.smoke, 'machine': common.machine(), 'rows': rows, 'args': vars(args)},
    table, notes,
  )  # fmt: skip
  return 0


if __name__ == '__main__':
  sys.exit(main())
