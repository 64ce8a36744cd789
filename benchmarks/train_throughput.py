r"""Training throughput, ptmjax against PyTorch `transformers`, same machine, same batch.

    ptmjax bench train [--sizes tiny,esm2_8m,esm2_35m] [--lengths 256,512,1024] [--smoke]

For every model size and sequence length: one batch of real YAAM proteins (the
first proteins, by ORF name, at least as long as the window, cut to it: no
padding, so both frameworks do the same work), `--tokens` tokens in all. A full
training step (forward, backward, gradient clipping, AdamW with weight decay):

  ptmjax   the trainer's own jitted step (weighted, label-smoothed BCE over the
           PTM channels on their candidate residues; linear PTM head).
  PyTorch  `EsmForTokenClassification` of the same shape (SDPA attention, no
           dropout), BCE with the same weights, `clip_grad_norm_`, `AdamW`.

Residues/s = real residues in the batch / median step time over `--reps` steps,
after `--warmup` steps; the first step (JIT compilation for ptmjax) is reported
separately. The two frameworks take turns (each round: one untimed step, then one
timed, of ptmjax, then of PyTorch), so a machine whose speed drifts (shared
cores) slows both alike; the ratio is the median of the per-round ratios.
Writes OUT/train_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

from benchmarks import common

CANDIDATES = {'phosphorylation': 'STY', 'ubiquitination': 'K', 'acetylation': 'K'}


def pick_batch(proteins, length: int, tokens: int):
  """Rows of one protein each, every row `length` tokens of real residues (no padding)."""
  n = length - 2  # <cls> ... <eos>
  b = max(1, tokens // length)
  long = sorted((p['id'], i) for i, p in enumerate(proteins) if len(p['sequence']) >= n)
  if len(long) < b:
    raise ValueError(f'only {len(long)} proteins have >= {n} residues; need {b}')
  rows = [((i, 0, n),) for _, i in long[:b]]
  return common.batch_of(proteins, rows, length), b * n


def torch_step(size: str, batch: dict, threads: int, dtype: str = 'float32'):
  """A closure running one PyTorch training step on `batch`."""
  import torch
  import transformers

  from ptmjax.data import ptm_types
  from ptmjax.data import tokenizer as tok
  from ptmjax.data.candidates import Candidates

  torch.manual_seed(0)
  torch.set_num_threads(threads)
  layers, width, heads, mlp = common.SIZES[size]
  t = tok.esm()
  cfg = transformers.EsmConfig(
    vocab_size=t.vocab_size, hidden_size=width, num_hidden_layers=layers,
    num_attention_heads=heads, intermediate_size=mlp, max_position_embeddings=1026,
    position_embedding_type='rotary', token_dropout=True, mask_token_id=t.mask_id,
    pad_token_id=t.pad_id, layer_norm_eps=1e-5, hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0, num_labels=ptm_types.NUM_TYPES,
  )  # fmt: skip
  try:
    model = transformers.EsmForTokenClassification._from_config(cfg, attn_implementation='sdpa')
  except (ValueError, ImportError):  # an older transformers without SDPA for ESM
    model = transformers.EsmForTokenClassification(cfg)
  device = 'cuda' if torch.cuda.is_available() else 'cpu'  # beside a GPU JAX, a GPU PyTorch
  model.to(device).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
  ids = torch.as_tensor(batch['tokens'], dtype=torch.long, device=device)
  attn = torch.as_tensor(batch['segment_ids'] > 0, dtype=torch.long, device=device)
  labels = batch['labels'].astype(np.float32)
  cand = Candidates.from_config(CANDIDATES).token_table(t)[batch['tokens']]
  channel = np.isin(np.array(ptm_types.PTM_NAMES), list(CANDIDATES))
  weights = torch.as_tensor(cand & (labels >= 0) & channel, dtype=torch.float32, device=device)
  targets = torch.as_tensor(
    np.clip(labels, 0, 1) * 0.95 + 0.025, dtype=torch.float32, device=device
  )
  pos_weight = torch.full((ptm_types.NUM_TYPES,), 10.0, device=device)

  bf16 = dtype == 'bfloat16'  # ptmjax: bf16 compute, fp32 parameters; here: autocast

  def step():
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
      logits = model(input_ids=ids, attention_mask=attn).logits.float()
    per = torch.nn.functional.binary_cross_entropy_with_logits(
      logits, targets, weight=weights, pos_weight=pos_weight, reduction='sum'
    )
    loss = per / weights.sum().clamp(min=1)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()

  return step, f'{getattr(model.config, "_attn_implementation", "eager")} on {device}'


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog='ptmjax bench train', description=__doc__.splitlines()[0])
  p.add_argument('--sizes', default='tiny,esm2_8m,esm2_35m', help=f'of {list(common.SIZES)}')
  p.add_argument('--lengths', default='256,512,1024', help='tokens per protein window')
  p.add_argument('--tokens', type=int, default=4096, help='tokens per batch (rows = tokens/len)')
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--reps', type=int, default=5)
  p.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  p.add_argument('--no-torch', action='store_true', help='ptmjax only (e.g. on a TPU VM)')
  p.add_argument('--data', default=None, help='the shared data folder (../shared/data)')
  p.add_argument('--out', default='runs/bench', help='where the JSON and markdown go')
  p.add_argument('--smoke', action='store_true', help='seconds: tiny, 64 tokens, one rep')
  args = p.parse_args(argv)
  if args.smoke:
    args.sizes, args.lengths, args.tokens, args.warmup, args.reps = 'tiny', '64', 128, 1, 1

  threads = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  proteins = common.load_proteins('yaam', common.shared_data(args.data))
  rows = []
  for size in args.sizes.split(','):
    for length in (int(x) for x in args.lengths.split(',')):
      batch, residues = pick_batch(proteins, length, args.tokens)
      cfg = common.model_config(size, args.dtype)
      jstep = common.JaxTrainStep(
        cfg, common.train_config(len(batch['tokens']), length), CANDIDATES
      )
      device_batch = jstep.put(batch)
      run_jax = lambda: jstep(device_batch)  # noqa: B023, E731
      if args.no_torch:
        j = common.timed(run_jax, warmup=args.warmup, reps=args.reps)
      else:
        step, attn = torch_step(size, batch, threads, args.dtype)
        j, t, ratios = common.timed_pair(run_jax, step, warmup=args.warmup, reps=args.reps)
      row = {
        'size': size, 'length': length, 'batch': len(batch['tokens']), 'residues': residues,
        'params_m': round(_params(cfg) / 1e6, 2),
        'ptmjax_res_s': residues / j['median_s'], 'ptmjax_step_s': j['median_s'],
        'ptmjax_compile_s': j['first_call_s'] - j['median_s'], 'ptmjax_timing': j,
      }  # fmt: skip
      if not args.no_torch:
        row.update(
          torch_res_s=residues / t['median_s'], torch_step_s=t['median_s'],
          torch_attention=attn, torch_timing=t,
          ratio=statistics.median(ratios), ratios=ratios,
        )  # fmt: skip
      print({k: v for k, v in row.items() if not k.endswith('timing')}, flush=True)
      rows.append(row)

  table = common.md_table(
    ['size', 'params', 'length', 'batch', 'ptmjax res/s', 'PyTorch res/s', 'ptmjax / PyTorch',
     'ptmjax compile s'],
    [[r['size'], f'{r["params_m"]}M', r['length'], r['batch'], f'{r["ptmjax_res_s"]:,.0f}',
      f'{r["torch_res_s"]:,.0f}' if 'torch_res_s' in r else '-',
      f'{r["ratio"]:.2f}' if 'ratio' in r else '-', f'{r["ptmjax_compile_s"]:.1f}']
     for r in rows],
  )  # fmt: skip
  notes = [
    f'Median of {args.reps} rounds after {args.warmup} warm-up steps; each round one untimed '
    f'and one timed step of ptmjax, then of PyTorch; ratio = median of the per-round ratios. '
    f'{args.tokens} tokens per '
    f'batch of real YAAM proteins (no padding); {args.dtype}; PyTorch with {threads} threads.'
  ]
  common.write(
    args.out, 'train_throughput',
    {'command': 'ptmjax bench train ' + ' '.join(sys.argv[1:] if argv is None else argv),
     'smoke': args.smoke, 'machine': common.machine(), 'rows': rows, 'args': vars(args)},
    table, notes,
  )  # fmt: skip
  return 0


def _params(cfg) -> int:
  from ptmjax.models import num_params

  return num_params(cfg)


if __name__ == '__main__':
  sys.exit(main())
