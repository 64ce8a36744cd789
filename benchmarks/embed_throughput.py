"""`ptmjax embed` throughput (residues/s) for a tiny and an ESM-2-8M-sized encoder.

Runs what a user runs: builds a random ESM-2-style checkpoint with
`transformers` (no download), imports it with `ptmjax convert-hf`, then embeds
the first N proteins of a FASTA file with `ptmjax embed`. Compilation is part
of the first pass; the timed pass reuses the jitted functions, so it is the
steady state. The same checkpoint in PyTorch `transformers` is the baseline
(ratio in the same run). Writes a JSON result.

    python -m benchmarks.embed_throughput \
      --fasta ../shared/data/yeast/s288c_r64_proteins.fasta --num 200 --out embed.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import tempfile
import time

CONFIGS = {
  # name: (layers, width, heads, mlp)
  'tiny': (2, 32, 4, 48),
  'esm2_8m': (6, 320, 20, 1280),  # facebook/esm2_t6_8M_UR50D
}


def make_checkpoint(path, layers, width, heads, mlp):
  import torch
  import transformers

  from ptmjax.data import tokenizer as tok

  torch.manual_seed(0)
  t = tok.esm()
  cfg = transformers.EsmConfig(
    vocab_size=t.vocab_size,
    hidden_size=width,
    num_hidden_layers=layers,
    num_attention_heads=heads,
    intermediate_size=mlp,
    max_position_embeddings=1026,
    position_embedding_type='rotary',
    token_dropout=True,
    mask_token_id=t.mask_id,
    pad_token_id=t.pad_id,
    layer_norm_eps=1e-5,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
  )
  transformers.EsmForMaskedLM(cfg).save_pretrained(path)
  t.save_vocab(pathlib.Path(path) / 'vocab.txt')


def torch_reference(hf_dir, sequences) -> dict:
  """The same checkpoint in PyTorch transformers (EsmModel, SDPA attention), one protein
  per call (no padding), proteins cut to 1,022 residues; after one warm-up call."""
  import torch
  import transformers

  from ptmjax.data import tokenizer as tok

  torch.set_num_threads(os.cpu_count())
  model = transformers.EsmModel.from_pretrained(hf_dir, add_pooling_layer=False).eval()
  t = tok.esm()
  encoded = [torch.tensor(t.encode(s[:1022])[None], dtype=torch.long) for s in sequences]
  with torch.inference_mode():
    model(encoded[0])
    start = time.perf_counter()
    for x in encoded:
      model(x)
    seconds = time.perf_counter() - start
  residues = sum(min(len(s), 1022) for s in sequences)
  return {'torch_seconds': round(seconds, 2), 'torch_residues_per_s': round(residues / seconds)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--fasta', required=True)
  parser.add_argument('--num', type=int, default=200, help='proteins to embed')
  parser.add_argument('--configs', default=','.join(CONFIGS))
  parser.add_argument('--out', default='embed_throughput.json')
  args = parser.parse_args()

  from ptmjax import checkpoint, embed
  from ptmjax.data.records import read_proteins
  from ptmjax.models import hf_import

  proteins = read_proteins(args.fasta)[: args.num]
  results = []
  with tempfile.TemporaryDirectory() as tmp:
    fasta = pathlib.Path(tmp, 'in.fasta')
    fasta.write_text(''.join(f'>{i}\n{s}\n' for i, s in proteins))
    for name in args.configs.split(','):
      hf_dir, ckpt = pathlib.Path(tmp, name, 'hf'), pathlib.Path(tmp, name, 'ckpt')
      make_checkpoint(hf_dir, *CONFIGS[name])
      model, tokenizer, info = hf_import.convert(hf_dir)
      checkpoint.save_model(ckpt, model, tokenizer, info)
      start = time.perf_counter()
      first = embed.embed_fasta(ckpt, fasta, pathlib.Path(tmp, 'a.npz'), progress=False)
      first_s = time.perf_counter() - start
      timed = embed.embed_fasta(ckpt, fasta, pathlib.Path(tmp, 'b.npz'), progress=False)
      row = {
        'config': name,
        'proteins': timed.proteins,
        'residues': timed.residues,
        'windows': timed.windows,
        'padded_tokens': timed.tokens,
        'seconds': round(timed.seconds, 2),
        'residues_per_s': round(timed.residues_per_s),
        'first_pass_s_incl_compile': round(first_s, 2),
        'first_pass_model_s': round(first.seconds, 2),
      }
      row.update(torch_reference(hf_dir, [s for _, s in proteins]))
      row['ratio_ptmjax_over_torch'] = round(row['residues_per_s'] / row['torch_residues_per_s'], 2)
      print(json.dumps(row))
      results.append(row)
  machine = {
    'cpu_count': os.cpu_count(),
    'platform': platform.platform(),
    'processor': platform.processor(),
  }
  pathlib.Path(args.out).write_text(json.dumps({'machine': machine, 'results': results}, indent=2))


if __name__ == '__main__':
  main()
