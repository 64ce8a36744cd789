"""A small PTM dataset generated in code, in the datasets' schema, with planted rules.

For tests and the quickstart, where no data files may be read. The rules
(documented, so a report can show they were learned):

* phosphorylation: S/T followed by P (S-P, T-P; proline-directed kinases)
  is modified with probability 0.85; S/T with R three residues before
  (R-x-x-S/T; basophilic kinases) with probability 0.7; any other S/T/Y with
  probability 0.02.
* acetylation: K preceded by G (G-K) with probability 0.8, any other K with 0.03.
* glycosylation: N followed by x-S/T (x not P; the N-x-S/T sequon) with
  probability 0.6 in the 'source' variant only; unknown (-1) in 'target'.
* every other channel is unknown (-1).

Residues are drawn from yeast-like amino-acid frequencies; lengths from a
log-normal around 300.
"""

from __future__ import annotations

import numpy as np

from ptmjax.data import ptm_types

AMINO_ACIDS = 'ACDEFGHIKLMNPQRSTVWY'
# Approximate S. cerevisiae proteome composition (per cent).
FREQUENCIES = np.array(
  [
    5.5,
    1.3,
    5.8,
    6.5,
    4.4,
    5.0,
    2.2,
    6.6,
    7.3,
    9.5,
    2.1,
    6.1,
    4.4,
    3.9,
    4.4,
    9.0,
    5.9,
    5.6,
    1.0,
    3.4,
  ]
)
FREQUENCIES = FREQUENCIES / FREQUENCIES.sum()


def _labels(seq: str, rng: np.random.Generator, variant: str) -> np.ndarray:
  n = len(seq)
  labels = np.full((n, ptm_types.NUM_TYPES), ptm_types.UNKNOWN, np.int8)
  phos, ac, gly = (ptm_types.INDEX[k] for k in ('phosphorylation', 'acetylation', 'glycosylation'))
  labels[:, [phos, ac]] = ptm_types.NEGATIVE
  if variant == 'source':
    labels[:, gly] = ptm_types.NEGATIVE
  u = rng.random((n, 3))
  for i, aa in enumerate(seq):
    nxt = seq[i + 1] if i + 1 < n else ''
    if aa in 'ST':
      p = 0.85 if nxt == 'P' else 0.7 if i >= 3 and seq[i - 3] == 'R' else 0.02
      labels[i, phos] = u[i, 0] < p
    elif aa == 'Y':
      labels[i, phos] = u[i, 0] < 0.02
    elif aa == 'K':
      labels[i, ac] = u[i, 1] < (0.8 if i >= 1 and seq[i - 1] == 'G' else 0.03)
    elif aa == 'N' and variant == 'source' and i + 2 < n and nxt != 'P' and seq[i + 2] in 'ST':
      labels[i, gly] = u[i, 2] < 0.6
  return labels


def generate(num_proteins: int, seed: int = 0, variant: str = 'target', prefix: str = 'SYN'):
  """Examples (dicts in the TFDS schema, text as bytes) for `num_proteins` random proteins."""
  if variant not in ('source', 'target'):
    raise ValueError(f"variant must be 'source' or 'target', not {variant!r}")
  rng = np.random.default_rng([seed, 0 if variant == 'target' else 1])
  organism = b'Saccharomyces cerevisiae' if variant == 'target' else b'mixed (synthetic)'
  out = []
  for k in range(num_proteins):
    n = int(np.clip(rng.lognormal(np.log(300), 0.5), 30, 1500))
    seq = 'M' + ''.join(rng.choice(list(AMINO_ACIDS), n - 1, p=FREQUENCIES))
    pid = f'{prefix}{k:05d}'
    out.append(
      {
        'id': pid.encode(),
        'sequence': seq.encode(),
        'labels': _labels(seq, rng, variant),
        'organism': organism,
        'taxon_id': 559292 if variant == 'target' else -1,
        'cluster': pid.encode(),
        'source': b'synthetic',
      }
    )
  return out


def splits(num_proteins: int, seed: int = 0, variant: str = 'target', prefix: str = 'SYN'):
  """{'train', 'validation', 'test'} at 80/10/10 of generated proteins (all distinct)."""
  ex = generate(num_proteins, seed, variant, prefix)
  a, b = int(0.8 * len(ex)), int(0.9 * len(ex))
  return {'train': ex[:a], 'validation': ex[a:b], 'test': ex[b:]}
