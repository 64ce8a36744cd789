"""Per-residue and pooled embeddings of the proteins of a FASTA file.

    ptmjax embed --checkpoint MODEL_DIR --fasta proteins.fasta --out emb.npz

From Python: `embed_fasta(...)`, or `ptmjax.inference.run(..., outputs=('hidden',))`
for arrays in memory.
"""

from __future__ import annotations

import numpy as np

from ptmjax import checkpoint as ckpt
from ptmjax import inference
from ptmjax.data.records import read_proteins


def embed_fasta(
  checkpoint,
  fasta,
  out,
  *,
  max_len: int | None = None,
  stride: int | None = None,
  tokens_per_batch: int | None = None,
  dtype: str | None = None,
  progress: bool = True,
) -> inference.Stats:
  """Writes per-residue and mean-pooled embeddings of every protein in `fasta` to `out` (.npz).

  Keys: `residues/<id>` [length, width] float32 (special tokens removed),
  `pooled/<id>` [width] (mean over residues), and `ids` (file order).
  """
  proteins = read_proteins(fasta)
  overrides = {'dtype': dtype} if dtype else {}
  model, tokenizer, _ = ckpt.load_model(checkpoint, **overrides)
  results, stats = inference.run(
    model,
    tokenizer,
    [s for _, s in proteins],
    outputs=('hidden',),
    max_len=max_len,
    stride=stride,
    tokens_per_batch=tokens_per_batch,
    progress=progress,
  )
  arrays = {'ids': np.array([i for i, _ in proteins])}
  for (pid, _), res in zip(proteins, results, strict=True):
    arrays[f'residues/{pid}'] = res['hidden']
    arrays[f'pooled/{pid}'] = res['hidden'].mean(0)
  np.savez(out, **arrays)
  return stats
