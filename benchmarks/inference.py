r"""`ptmjax predict` on the whole S288C proteome: residues/s and peak host memory.

    ptmjax bench inference [--checkpoint RUN/final] [--smoke]

Runs the command a user runs, `ptmjax predict --checkpoint M --fasta PROTEOME
--out preds.tsv`, in a child process: its wall time (start-up, compilation and
the TSV included), the model time and residues/s it reports, and its peak
resident memory (getrusage of the child). The model is `--checkpoint`, else a
randomly initialised `small` model (3 layers, width 96; speed does not depend on
the weights) with 256-token windows, as the `small` experiments train it.

Baseline in the same run: PyTorch `EsmForTokenClassification` of the same shape
on the same windows (`ptmjax.inference.window_spans`), sorted by length and
batched to the same tokens per pass, under `torch.inference_mode`, on
`--torch-proteins` proteins. Writes OUT/inference.{json,md}.

`--family proteinbert`: a random ProteinBERT of `--size` instead (the
`SIZE-proteinbert` configs), which `predict` runs on whole proteins, no windows;
no PyTorch baseline (there is no PyTorch ProteinBERT here; `bench proteinbert`
compares with the Keras original). Writes OUT/inference_proteinbert.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import common

CANDIDATES = {'phosphorylation': 'STY', 'ubiquitination': 'K', 'acetylation': 'K'}


def random_model(path: pathlib.Path, size: str, max_len: int, family: str = 'transformer') -> None:
  from ptmjax import checkpoint
  from ptmjax.configs import common as configs
  from ptmjax.data import tokenizer as tok
  from ptmjax.models import create_model
  from ptmjax.models import proteinbert_import as pbi

  if family == 'proteinbert':
    s = configs.PROTEINBERT_SIZES[size]
    sizes = dict(vocab_size=26, num_annotations=0, local_dim=s['embed_dim'],
                 global_dim=s['global_dim'], num_blocks=s['num_layers'],
                 num_heads=s['num_heads'], key_dim=s['key_dim'], kernel=9)  # fmt: skip
    cfg = pbi.model_config(sizes, ptm_head='mlp', head_dim=s['head_dim'])
    checkpoint.save_model(path, create_model(cfg, seed=0), tok.proteinbert(), _info(max_len))
    return
  model = create_model(common.model_config(size, ptm_head='mlp', head_dim=64), seed=0)
  checkpoint.save_model(path, model, tok.esm(), _info(max_len))


def _info(max_len: int) -> dict:
  """What a trained model folder records and `predict` reads: channels, candidates, ..."""
  return {
    'channels': list(CANDIDATES),
    'candidates': CANDIDATES,
    'thresholds': {c: 0.5 for c in CANDIDATES},
    'config': {'data': {'max_len': max_len}},
    'random_init': True,
  }


def run_predict(ckpt, fasta, out) -> dict:
  cmd = [sys.executable, '-m', 'ptmjax.cli', 'predict', '--checkpoint', str(ckpt), '--fasta',
         str(fasta), '--out', str(out)]  # fmt: skip
  t = time.perf_counter()
  proc = subprocess.run(cmd, capture_output=True, text=True)
  wall = time.perf_counter() - t
  if proc.returncode:
    raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
  # 'predicted ... for N proteins, R residues (W windows) in S s (X residues/s) -> out'
  m = re.search(r'for (\d+) proteins, (\d+) residues \((\d+) windows\) in ([\d.]+) s', proc.stdout)
  if not m:
    raise RuntimeError(f'unexpected predict output: {proc.stdout!r}')
  proteins, residues, windows, seconds = int(m[1]), int(m[2]), int(m[3]), float(m[4])
  kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
  return {
    'proteins': proteins, 'residues': residues, 'windows': windows,
    'model_s': seconds, 'residues_per_s': residues / seconds,
    'wall_s': wall, 'end_to_end_residues_per_s': residues / wall,
    'peak_rss_gib': kib / 2**20, 'tsv_mib': pathlib.Path(out).stat().st_size / 2**20,
    'command': ' '.join(['ptmjax', *cmd[3:]]),
  }  # fmt: skip


def torch_baseline(size: str, sequences: list[str], max_len: int, tokens_per_batch: int) -> dict:
  import torch
  import transformers

  from ptmjax import inference
  from ptmjax.data import ptm_types
  from ptmjax.data import tokenizer as tok

  torch.manual_seed(0)
  layers, width, heads, mlp = common.SIZES[size]
  t = tok.esm()
  cfg = transformers.EsmConfig(
    vocab_size=t.vocab_size, hidden_size=width, num_hidden_layers=layers,
    num_attention_heads=heads, intermediate_size=mlp, max_position_embeddings=1026,
    position_embedding_type='rotary', token_dropout=True, mask_token_id=t.mask_id,
    pad_token_id=t.pad_id, layer_norm_eps=1e-5, num_labels=ptm_types.NUM_TYPES,
  )  # fmt: skip
  model = transformers.EsmForTokenClassification._from_config(cfg, attn_implementation='sdpa')
  model.eval()
  window = max_len - t.num_special
  pieces = [s[a:b] for s in sequences for a, b in inference.window_spans(len(s), window)]
  pieces.sort(key=len)
  t0 = time.perf_counter()
  with torch.inference_mode():
    i = 0
    while i < len(pieces):
      length = len(pieces[min(len(pieces) - 1, i)]) + t.num_special
      rows = max(1, tokens_per_batch // max(length, 1))
      chunk = pieces[i : i + rows]
      width_ = max(len(p) for p in chunk) + t.num_special
      ids = np.full((len(chunk), width_), t.pad_id, np.int64)
      for r, p in enumerate(chunk):
        enc = t.encode(p)
        ids[r, : len(enc)] = enc
      ids_t = torch.as_tensor(ids)
      torch.sigmoid(model(input_ids=ids_t, attention_mask=(ids_t != t.pad_id).long()).logits)
      i += rows
  seconds = time.perf_counter() - t0
  residues = sum(len(s) for s in sequences)
  return {'proteins': len(sequences), 'windows': len(pieces), 'seconds': seconds,
          'residues_per_s': residues / seconds}  # fmt: skip


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog='ptmjax bench inference', description=__doc__.splitlines()[0])
  p.add_argument('--checkpoint', default=None, help='a trained model folder (default: random)')
  p.add_argument('--size', default='small', help='random model size (without --checkpoint)')
  p.add_argument('--family', choices=('transformer', 'proteinbert'), default='transformer')
  p.add_argument('--max-len', type=int, default=256, help='window tokens of the random model')
  p.add_argument('--fasta', default=None, help='default: the shared S288C proteome')
  p.add_argument('--proteins', type=int, default=0, help='first N proteins (0 = all)')
  p.add_argument('--torch-proteins', type=int, default=1000, help='PyTorch baseline subset')
  p.add_argument('--data', default=None, help='the shared data folder (../shared/data)')
  p.add_argument('--out', default='runs/bench')
  p.add_argument('--smoke', action='store_true', help='seconds: 20 proteins, tiny model')
  args = p.parse_args(argv)
  if args.smoke:
    args.proteins, args.torch_proteins, args.size = 20, 20, 'tiny'

  from ptmjax.data.records import read_proteins

  fasta = pathlib.Path(
    args.fasta or common.shared_data(args.data) / 'yeast' / 's288c_r64_proteins.fasta'
  )
  proteins = read_proteins(fasta)
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    if args.proteins:
      proteins = proteins[: args.proteins]
      fasta = tmp / 'subset.fasta'
      fasta.write_text(''.join(f'>{i}\n{s}\n' for i, s in proteins))
    ckpt = pathlib.Path(args.checkpoint) if args.checkpoint else tmp / 'model'
    if not args.checkpoint:
      random_model(ckpt, args.size, args.max_len, args.family)
    res = run_predict(ckpt, fasta, tmp / 'preds.tsv')
    from ptmjax import checkpoint

    meta = checkpoint.read_meta(checkpoint.resolve_model_dir(ckpt))
    max_len = meta['info'].get('config', {}).get('data', {}).get('max_len') or args.max_len
    m = meta['model']
    size = next(
      (k for k, v in common.SIZES.items()
       if v == (m['num_layers'], m['embed_dim'], m['num_heads'], m['mlp_dim'])), None,
    )  # fmt: skip
    if size and args.torch_proteins and m.get('family', 'transformer') == 'transformer':
      rng = np.random.default_rng(0)
      pick = rng.choice(len(proteins), min(args.torch_proteins, len(proteins)), replace=False)
      seqs = [proteins[i][1] for i in sorted(pick)]
      torch_res = torch_baseline(size, seqs, max_len, 2048)
      res['torch'] = torch_res
      res['ratio'] = res['residues_per_s'] / torch_res['residues_per_s']
  print(res, flush=True)

  table = common.md_table(
    ['proteins', 'residues', 'windows', 'model s', 'residues/s', 'wall s (all)',
     'peak RSS', 'PyTorch res/s', 'ptmjax / PyTorch'],
    [[f'{res["proteins"]:,}', f'{res["residues"]:,}', f'{res["windows"]:,}',
      f'{res["model_s"]:.1f}', f'{res["residues_per_s"]:,.0f}', f'{res["wall_s"]:.1f}',
      f'{res["peak_rss_gib"]:.2f} GiB',
      f'{res["torch"]["residues_per_s"]:,.0f}' if 'torch' in res else '-',
      f'{res["ratio"]:.2f}' if 'ratio' in res else '-']],
  )  # fmt: skip
  notes = [
    f'Model: {"random " + args.size + " " + args.family if not args.checkpoint else args.checkpoint}, '
    + (
      f'{max_len}-token windows (half-window stride), '
      if args.family == 'transformer'
      else 'whole proteins (no windows), length buckets about 1.25x apart, '
    )
    + f'{os.cpu_count()} CPU threads. '
    '"model s" is the forward passes as `ptmjax predict` reports them; "wall s" is the whole '
    'command (start-up, compilation, reading, the TSV). PyTorch: the same windows, batched, '
    f'on {res.get("torch", {}).get("proteins", 0)} of the proteins.',
    f'`{res["command"]}`',
  ]
  common.write(
    args.out, 'inference' if args.family == 'transformer' else 'inference_proteinbert',
    {'command': 'ptmjax bench inference ' + ' '.join(sys.argv[1:] if argv is None else argv),
     'smoke': args.smoke, 'machine': common.machine(), 'result': res, 'args': vars(args)},
    table, notes,
  )  # fmt: skip
  return 0


if __name__ == '__main__':
  sys.exit(main())
