"""Per-residue and pooled embeddings of the proteins of a FASTA file.

    ptmjax embed --checkpoint MODEL_DIR --fasta proteins.fasta --out emb.npz

From Python: `embed_fasta(...)`, or `ptmjax.inference.run(..., outputs=('hidden',))`
for arrays in memory.
"""

from __future__ import annotations

import zipfile

import numpy as np

from ptmjax import checkpoint as ckpt
from ptmjax import inference
from ptmjax.data.records import atomic_output, prepare_output, protein_chunks
from ptmjax.errors import NonFiniteOutputError, UsageError


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
  lm: bool = False,
  pad_to: int | None = None,
) -> inference.Stats:
  """Writes embeddings of every protein in `fasta` to `out` (.npz).

  Keys: `residues/<id>` [length, width] float32 (special tokens removed),
  `pooled/<id>` [width] (a transformer's mean over residues; ProteinBERT's global
  track), `ids` (file order) and, with `lm`, `lm/<id>` [length, vocab]: the LM head's
  probabilities on each residue (a transformer's MLM head; ProteinBERT's sequence head).

  `pad_to` (ProteinBERT): the original's padding, every row padded to `pad_to`
  tokens (outputs then depend on it, as the original's do).
  """
  out = prepare_output(out, inputs=(fasta,))
  overrides = {'dtype': dtype} if dtype else {}
  if pad_to:
    overrides['padding'] = 'reference'
  model, tokenizer, _ = ckpt.load_model(checkpoint, **overrides)
  if pad_to and not model.traits.reference_padding:
    raise UsageError("--pad-to selects ProteinBERT's reference padding; this is a transformer")
  outputs = ('hidden',) + model.traits.protein_outputs + (('mlm',) if lm else ())
  total = inference.Stats()
  ids = []
  # Streamed: each chunk of proteins is embedded and its arrays written into the .npz
  # (a zip of .npy members, as np.savez writes) before the next is read. Written to
  # exactly `out` (np.savez given a name appends '.npz'), complete or not at all.
  with atomic_output(out, 'wb') as f, zipfile.ZipFile(f, 'w', zipfile.ZIP_STORED) as npz:
    for chunk in protein_chunks(fasta):
      results, stats = inference.run(
        model,
        tokenizer,
        [s for _, s in chunk],
        outputs=outputs,
        max_len=max_len,
        stride=stride,
        tokens_per_batch=tokens_per_batch,
        progress=progress,
        pad_to=pad_to,
      )
      total += stats
      for (pid, _), res in zip(chunk, results, strict=True):
        if not all(np.isfinite(v).all() for v in res.values()):
          raise NonFiniteOutputError(f'protein {pid!r}: the model gave non-finite embeddings')
        ids.append(pid)
        _member(npz, f'residues/{pid}', res['hidden'])
        _member(npz, f'pooled/{pid}', res['pooled'] if 'pooled' in res else res['hidden'].mean(0))
        if lm:
          logits = res['mlm'] - res['mlm'].max(-1, keepdims=True)
          probs = np.exp(logits)
          _member(npz, f'lm/{pid}', (probs / probs.sum(-1, keepdims=True)).astype(np.float32))
    _member(npz, 'ids', np.array(ids))
  return total


def _member(npz: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
  """One array of an .npz, written as np.savez does (`name.npy`, NumPy's format)."""
  with npz.open(f'{name}.npy', 'w', force_zip64=True) as f:
    np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
