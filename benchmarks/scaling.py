r"""Throughput and MFU from 1 to N devices (data parallel over a NamedSharding mesh).

    ptmjax bench scaling                       # GPU/TPU: 35M and 150M, 1,024 tokens, bf16
    ptmjax bench scaling --fake-devices 8 --sizes tiny --length 256 --dtype float32   # CPU

For each size and each device count n (1, 2, 4, ... up to all devices): the
trainer's jitted step on a `data` x `fsdp` mesh of the first n devices
(`--mesh data` or `--mesh fsdp`), `--per-device` rows of `--length` tokens per
device (weak scaling), median step time after warm-up. Model FLOPs per token of
a training step: 6 x (non-embedding parameters) + 12 x layers x length x width
(attention scores and values, forward and backward; PaLM's accounting).
MFU = achieved model FLOP/s / (n x the device's peak dense FLOP/s for the
dtype), for device kinds in PEAK_TFLOPS; on CPU it is left out (no meaningful
peak), and with `--fake-devices` the "devices" share the same cores: that run
shows the script works, not scaling. Writes OUT/scaling.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np

from benchmarks import common

CANDIDATES = {'phosphorylation': 'STY', 'ubiquitination': 'K', 'acetylation': 'K'}
# Peak dense TFLOP/s per device (bf16 / fp32-as-TF32 on GPUs), from the vendors' sheets.
PEAK_TFLOPS = {
  'H100': {'bfloat16': 989.0, 'float32': 494.0},  # SXM
  'H200': {'bfloat16': 989.0, 'float32': 494.0},
  'A100': {'bfloat16': 312.0, 'float32': 156.0},
  'L4': {'bfloat16': 121.0, 'float32': 60.0},
  'TPU v4': {'bfloat16': 275.0},
  'TPU v5 lite': {'bfloat16': 197.0},
  'TPU v5e': {'bfloat16': 197.0},
  'TPU v5p': {'bfloat16': 459.0},
  'TPU v6 lite': {'bfloat16': 918.0},
}


def peak_flops(device_kind: str, dtype: str) -> float | None:
  for key, peaks in sorted(PEAK_TFLOPS.items(), key=lambda kv: -len(kv[0])):
    if key.lower() in device_kind.lower() and dtype in peaks:
      return peaks[dtype] * 1e12
  return None


def flops_per_token(cfg, length: int) -> float:
  d, layers = cfg.embed_dim, cfg.num_layers
  non_embedding = layers * (4 * d * d + 2 * d * cfg.mlp_dim)
  return 6 * non_embedding + 12 * layers * length * d


def device_counts(total: int) -> list[int]:
  out, n = [], 1
  while n < total:
    out.append(n)
    n *= 2
  return out + [total]


def synthetic_batch(rows: int, length: int, seed: int = 0) -> dict:
  """Full rows of random residues (no padding); speed does not depend on the letters."""
  from ptmjax.data import ptm_types
  from ptmjax.data import tokenizer as tok

  t = tok.esm()
  rng = np.random.default_rng(seed)
  aa = np.array([t.id(a) for a in 'ACDEFGHIKLMNPQRSTVWY'], np.int32)
  tokens = aa[rng.integers(0, 20, (rows, length))]
  tokens[:, 0], tokens[:, -1] = t.cls_id, t.eos_id
  labels = (rng.random((rows, length, ptm_types.NUM_TYPES)) < 0.02).astype(np.int8)
  return {
    'tokens': tokens,
    'segment_ids': np.ones((rows, length), np.int32),
    'positions': np.broadcast_to(np.arange(length, dtype=np.int32), (rows, length)).copy(),
    'labels': labels,
    'counts': labels.sum(1, dtype=np.int32)[:, None].repeat(8, 1),
    'counts_valid': np.ones((rows, 8, ptm_types.NUM_TYPES), bool),
  }


def measure(args) -> list[dict]:
  import jax

  from ptmjax import sharding as shd

  kind = jax.devices()[0].device_kind
  rows = []
  for size in args.sizes.split(','):
    cfg = common.model_config(size, args.dtype, remat=args.remat)
    fpt = flops_per_token(cfg, args.length)
    for n in device_counts(jax.device_count()):
      shape = {'data': 1, 'fsdp': 1, 'tensor': 1}
      shape[args.mesh] = n
      mesh = shd.make_mesh(shape, jax.devices()[:n])
      global_rows = args.per_device * n
      config = common.train_config(global_rows, args.length, 'pack')
      step = common.JaxTrainStep(cfg, config, CANDIDATES, mesh=mesh)
      batch = step.put(synthetic_batch(global_rows, args.length))
      t = common.timed(lambda: step(batch), warmup=args.warmup, reps=args.reps)  # noqa: B023
      tokens = global_rows * args.length
      row = {
        'size': size, 'devices': n, 'mesh': args.mesh, 'rows': global_rows,
        'length': args.length, 'dtype': args.dtype, 'step_s': t['median_s'],
        'tokens_per_s': tokens / t['median_s'],
        'model_tflops_per_s': fpt * tokens / t['median_s'] / 1e12,
        'compile_s': t['first_call_s'] - t['median_s'], 'timing': t,
      }  # fmt: skip
      peak = peak_flops(kind, args.dtype)
      if peak and jax.default_backend() != 'cpu':
        row['mfu'] = fpt * tokens / t['median_s'] / (n * peak)
      print({k: v for k, v in row.items() if k != 'timing'}, flush=True)
      rows.append(row)
  for r in rows:
    one = next(x for x in rows if x['size'] == r['size'] and x['devices'] == 1)
    r['scaling_efficiency'] = r['tokens_per_s'] / (one['tokens_per_s'] * r['devices'])
  return rows


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  p = argparse.ArgumentParser(prog='ptmjax bench scaling', description=__doc__.splitlines()[0])
  p.add_argument('--sizes', default='esm2_35m,esm2_150m', help=f'of {list(common.SIZES)}')
  p.add_argument('--length', type=int, default=1024)
  p.add_argument('--per-device', type=int, default=8, help='rows per device (weak scaling)')
  p.add_argument('--dtype', default='bfloat16', choices=('float32', 'bfloat16'))
  p.add_argument('--mesh', default='data', choices=('data', 'fsdp'))
  p.add_argument('--remat', action='store_true', help='recompute activations (less memory)')
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--reps', type=int, default=5)
  p.add_argument('--fake-devices', type=int, default=0, help='CPU: pretend to have N devices')
  p.add_argument('--out', default='runs/bench')
  p.add_argument('--smoke', action='store_true', help='seconds: tiny, 64 tokens, 2 fake devices')
  args = p.parse_args(argv)
  if args.smoke:
    args.sizes, args.length, args.per_device, args.dtype = 'tiny', 64, 1, 'float32'
    args.warmup, args.reps, args.fake_devices = 1, 1, args.fake_devices or 2

  flag = f'--xla_force_host_platform_device_count={args.fake_devices}'
  if args.fake_devices and flag not in os.environ.get('XLA_FLAGS', ''):
    # The device count is fixed when JAX starts: run in a child that starts with it.
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    env['XLA_FLAGS'] = ' '.join(
      [f for f in env.get('XLA_FLAGS', '').split() if 'device_count' not in f] + [flag]
    )
    cmd = [sys.executable, '-m', 'benchmarks.scaling', *argv]
    return subprocess.run(cmd, env=env, cwd=common.REPO).returncode

  rows = measure(args)
  table = common.md_table(
    ['size', 'devices', 'rows x length', 'dtype', 'tokens/s', 'model TFLOP/s', 'MFU',
     'scaling eff.', 'compile s'],
    [[r['size'], r['devices'], f'{r["rows"]} x {r["length"]}', r['dtype'],
      f'{r["tokens_per_s"]:,.0f}', f'{r["model_tflops_per_s"]:.3f}',
      f'{100 * r["mfu"]:.1f} %' if 'mfu' in r else '-', f'{r["scaling_efficiency"]:.2f}',
      f'{r["compile_s"]:.1f}'] for r in rows],
  )  # fmt: skip
  notes = [
    'Weak scaling: rows grow with devices. Scaling efficiency = tokens/s / (n x tokens/s on '
    'one device).'
    + (
      ' Fake CPU devices share the same cores: this shows the script runs, not scaling.'
      if args.fake_devices
      else ''
    )  # fmt: skip
  ]
  common.write(
    args.out, 'scaling',
    {'command': 'ptmjax bench scaling ' + ' '.join(argv), 'smoke': args.smoke,
     'machine': common.machine(), 'rows': rows, 'args': vars(args)},
    table, notes,
  )  # fmt: skip
  return 0


if __name__ == '__main__':
  sys.exit(main())
