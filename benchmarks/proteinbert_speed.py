r"""ProteinBERT speed: ptmjax against the Keras reference, taking turns, and cost against length.

    ptmjax bench proteinbert --keras-python ref/bin/python --out benchmarks/results

The same model (the published sizes: local 128, global 512, 6 blocks, 4 heads,
8,943 annotations; random weights) in ptmjax (jitted, masked padding) and in the
`protein-bert` package's Keras (`predict_on_batch`, `train_on_batch` with Adam),
in the reference environment (`--keras-python`: see
tests/reference/make_proteinbert_fixtures.py for its install), driven through
`keras_proteinbert_worker.py`. Inference and a training step (LM cross-entropy
over every position + annotation BCE, Adam) at 512 and 1,024 tokens, 4,096 tokens
per batch; the frameworks take turns, round by round (`common.timed_pair`).
Then ptmjax alone on one protein per batch from 512 to 35,000 residues:
time per residue and the process's peak memory.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys

import numpy as np

from benchmarks import common

PUBLISHED = dict(
  vocab_size=26, num_annotations=8943, local_dim=128, global_dim=512, num_blocks=6, num_heads=4,
  key_dim=64, kernel=9,
)  # fmt: skip
TINY = dict(PUBLISHED, num_annotations=16, local_dim=16, global_dim=32, num_blocks=2)


def ptmjax_steps(sizes: dict, rows: int, length: int):
  """(inference, train step) callables on one fixed batch; each blocks until done."""
  import jax
  import jax.numpy as jnp
  import optax
  from flax import nnx

  from ptmjax.models import create_model
  from ptmjax.models import proteinbert_import as pbi

  model = create_model(pbi.model_config(sizes), seed=0)
  graphdef, state = nnx.split(model)
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, 25, (rows, length)), jnp.int32)
  annotations = jnp.zeros((rows, 1, sizes['num_annotations']), jnp.float32)

  @jax.jit
  def infer(state, tokens):
    out = nnx.merge(graphdef, state)(tokens, heads=('mlm', 'annotations'), annotations=annotations)
    return jax.nn.softmax(out['mlm']), jax.nn.sigmoid(out['annotations'])

  params = nnx.state(model, nnx.Param)
  rest = nnx.state(model, nnx.Not(nnx.Param))
  tx = optax.adam(2e-4)

  def loss_fn(params, tokens):
    out = nnx.merge(graphdef, params, rest)(
      tokens, heads=('mlm', 'annotations'), annotations=annotations
    )
    ce = optax.softmax_cross_entropy_with_integer_labels(out['mlm'], tokens).mean()
    bce = optax.sigmoid_binary_cross_entropy(out['annotations'], annotations).mean()
    return ce + bce

  @jax.jit
  def train(params, opt_state, tokens):
    loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  holder = {'params': params, 'opt': tx.init(params)}

  def run_infer():
    jax.block_until_ready(infer(state, tokens))

  def run_train():
    holder['params'], holder['opt'], loss = train(holder['params'], holder['opt'], tokens)
    jax.block_until_ready(loss)

  return run_infer, run_train


class Keras:
  """The Keras reference in its own environment, one command at a time."""

  def __init__(self, python: str, sizes: dict):
    worker = common.REPO / 'benchmarks' / 'keras_proteinbert_worker.py'
    self.proc = subprocess.Popen(
      [python, str(worker), json.dumps(sizes)],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
    )
    if self.proc.stdout.readline().strip() != 'ready':
      raise RuntimeError(f'{python} {worker} did not start (is protein-bert installed there?)')

  def step(self, kind: str, rows: int, length: int) -> float:
    self.proc.stdin.write(f'{kind} {rows} {length}\n')
    self.proc.stdin.flush()
    answer = self.proc.stdout.readline().split()
    if not answer or answer[0] != 'ok':
      raise RuntimeError(f'Keras worker failed on {kind} {rows} {length}: {answer}')
    return float(answer[1])

  def close(self):
    self.proc.stdin.close()
    self.proc.wait(timeout=60)


def length_curve(sizes: dict, lengths, reps: int) -> list[dict]:
  """Each length in a child process of its own, so its peak RSS is that length's alone."""
  rows = []
  for n in lengths:
    cmd = [sys.executable, '-m', 'benchmarks.proteinbert_speed', '--one-length', str(n),
           '--reps', str(reps), '--sizes-json', json.dumps(sizes)]  # fmt: skip
    out = subprocess.run(cmd, cwd=common.REPO, capture_output=True, text=True, check=True)
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(rows[-1], flush=True)
  return rows


def one_length(sizes: dict, n: int, reps: int) -> dict:
  infer, _ = ptmjax_steps(sizes, 1, n)
  t = common.timed(infer, warmup=1, reps=reps)
  return {'residues': n, **t, 'us_per_residue': 1e6 * t['median_s'] / n, 'peak_gib': peak_rss_gib()}


def peak_rss_gib() -> float:
  """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: Linux keeps
  ru_maxrss across exec, so a child started by a 2 GiB parent reports the parent's peak
  (the first committed length curve did: 2.14 GiB at every length)."""
  try:
    for line in pathlib.Path('/proc/self/status').read_text().splitlines():
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 2**20  # kB -> GiB
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog='ptmjax bench proteinbert', description=__doc__.splitlines()[0])
  p.add_argument('--keras-python', default=None, help="the reference environment's python")
  p.add_argument('--tokens', type=int, default=4096, help='tokens per batch (rows x length)')
  p.add_argument('--lengths', default='512,1024', help='lengths for the Keras comparison')
  p.add_argument('--curve', default='512,1024,2048,4096,8192,16384,35000')
  p.add_argument('--reps', type=int, default=5)
  p.add_argument('--out', default='runs/bench')
  p.add_argument('--smoke', action='store_true', help='seconds: a tiny model, short lengths')
  p.add_argument('--one-length', type=int, default=0, help=argparse.SUPPRESS)  # the child
  p.add_argument('--sizes-json', default='', help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.one_length:
    print(json.dumps(one_length(json.loads(args.sizes_json), args.one_length, args.reps)))
    return 0
  sizes = PUBLISHED
  if args.smoke:
    sizes, args.tokens, args.lengths, args.curve, args.reps = TINY, 128, '64', '64,128', 1

  pairs = []
  keras = Keras(args.keras_python, sizes) if args.keras_python else None
  try:
    for length in map(int, args.lengths.split(',')):
      rows = max(1, args.tokens // length)
      infer, train = ptmjax_steps(sizes, rows, length)
      for kind, fn in (('infer', infer), ('train', train)):
        if keras:
          a, b, ratios = common.timed_pair(
            fn, lambda k=kind, r=rows, n=length: keras.step(k, r, n),
            warmup=1, reps=args.reps,
          )  # fmt: skip
          row = {'kind': kind, 'rows': rows, 'length': length, 'ptmjax': a, 'keras': b,
                 'ratio': float(np.median(ratios)), 'ratios': ratios}  # fmt: skip
        else:
          row = {'kind': kind, 'rows': rows, 'length': length,
                 'ptmjax': common.timed(fn, warmup=1, reps=args.reps)}  # fmt: skip
        pairs.append(row)
        print(row, flush=True)
  finally:
    if keras:
      keras.close()
  curve = length_curve(sizes, [int(x) for x in args.curve.split(',')], max(1, args.reps // 2))

  table = common.md_table(
    ['step', 'rows x length', 'ptmjax s', 'Keras s', 'ptmjax speed-up (median of rounds)'],
    [[r['kind'], f'{r["rows"]} x {r["length"]}', f'{r["ptmjax"]["median_s"]:.3f}',
      f'{r["keras"]["median_s"]:.3f}' if 'keras' in r else '-',
      f'{r["ratio"]:.2f}x' if 'ratio' in r else '-'] for r in pairs],
  ) + [''] + common.md_table(
    ['residues (one protein)', 'ptmjax s', 'us / residue', 'compile + first s', 'peak RSS'],
    [[f'{r["residues"]:,}', f'{r["median_s"]:.3f}', f'{r["us_per_residue"]:.1f}',
      f'{r["first_call_s"]:.1f}', f'{r["peak_gib"]:.2f} GiB'] for r in curve],
  )  # fmt: skip
  notes = [
    'Sizes: ' + ', '.join(f'{k} {v}' for k, v in sizes.items()) + '; random weights, float32.',
    'ptmjax: masked padding (what training and `predict` use); Keras: the package model, '
    'unmasked. Each round runs one untimed and one timed step of each framework in turn; '
    'speed-up = Keras time / ptmjax time per round, median over rounds. The length rows run '
    'each in a fresh process (peak RSS of that process: JAX, the model, one protein).',
  ]
  common.write(
    args.out, 'proteinbert',
    {'command': 'ptmjax bench proteinbert ' + ' '.join(sys.argv[1:] if argv is None else argv),
     'smoke': args.smoke, 'machine': common.machine(), 'pairs': pairs, 'curve': curve,
     'sizes': sizes},
    table, notes,
  )  # fmt: skip
  return 0


if __name__ == '__main__':
  sys.exit(main())
