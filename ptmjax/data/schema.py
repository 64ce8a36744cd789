"""The one per-protein schema of every ptmjax dataset, and what the builders share.

Per protein: `id`, `organism`, `taxon_id`, `sequence` (upper-case one-letter
codes), `labels` int8 [length, NUM_TYPES] (1 modified, 0 not, -1 unknown),
`cluster` (MMseqs2 representative id) and `source`. The builders in
`ptmjax/data/builders/` parse raw files with their `parse.py` and hand the
records to `make_splits` and `example`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from ptmjax.data import homology, ptm_types
from ptmjax.data.records import ProteinRecord, Tally

log = logging.getLogger(__name__)


def features():
  import tensorflow_datasets as tfds

  text = tfds.features.Text
  return tfds.features.FeaturesDict(
    {
      'id': text(),
      'organism': text(),
      'taxon_id': tfds.features.Scalar(np.int32),
      'sequence': text(),
      'labels': tfds.features.Tensor(shape=(None, ptm_types.NUM_TYPES), dtype=np.int8),
      'cluster': text(),
      'source': text(),
    }
  )


def example(record: ProteinRecord, cluster: str) -> dict:
  return {
    'id': record.id,
    'organism': record.organism,
    'taxon_id': record.taxon_id,
    'sequence': record.sequence,
    'labels': record.labels,
    'cluster': cluster,
    'source': record.source,
  }


def make_splits(
  records: Sequence[ProteinRecord],
  seed: int,
  min_seq_id: float = homology.MIN_SEQ_ID,
  coverage: float = homology.COVERAGE,
) -> dict[str, list[tuple[ProteinRecord, str]]]:
  """Clusters records and splits them by whole clusters.

  Returns:
    {split: [(record, cluster id), ...]} for train/validation/test.
  """
  start = time.perf_counter()
  clusters = homology.cluster_sequences({r.id: r.sequence for r in records}, min_seq_id, coverage)
  log.info('MMseqs2: %d proteins in %d clusters (%.0f%% id, %.0f%% cov) in %.1f s',
           len(records), len(set(clusters.values())), 100 * min_seq_id, 100 * coverage,
           time.perf_counter() - start)  # fmt: skip
  split_of = homology.split_by_cluster(clusters, seed)
  splits = {name: [] for name in homology.SPLITS}
  for r in records:
    splits[split_of[r.id]].append((r, clusters[r.id]))
  for name in [n for n, items in splits.items() if not items]:
    log.warning(
      'split %r is empty (only %d clusters); it is not written', name, len(set(clusters.values()))
    )
    del splits[name]
  return splits


def summarise(splits: dict[str, list[tuple[ProteinRecord, str]]]) -> dict:
  """Per split: proteins, clusters, residues and positives per channel."""
  out = {}
  for name, items in splits.items():
    positives = np.zeros(ptm_types.NUM_TYPES, np.int64)
    known = np.zeros(ptm_types.NUM_TYPES, np.int64)
    for r, _ in items:
      positives += (r.labels == ptm_types.POSITIVE).sum(0)
      known += (r.labels != ptm_types.UNKNOWN).sum(0)
    out[name] = {
      'proteins': len(items),
      'clusters': len({c for _, c in items}),
      'residues': int(sum(len(r.sequence) for r, _ in items)),
      'positives': dict(zip(ptm_types.PTM_NAMES, positives.tolist(), strict=True)),
      'known_residues': dict(zip(ptm_types.PTM_NAMES, known.tolist(), strict=True)),
    }
  return out


def metadata(tally: Tally, splits: dict, **extra) -> dict:
  """What a built dataset records about itself (stored by TFDS as metadata.json)."""
  return {
    'ptm_types': list(ptm_types.PTM_NAMES),
    'modification_channels': list(ptm_types.MODIFICATION_CHANNELS),
    'counts': dict(sorted(tally.items())),
    'splits': summarise(splits),
    **extra,
  }


def log_summary(name: str, meta: dict) -> None:
  for split, s in meta['splits'].items():
    nonzero = {k: v for k, v in s['positives'].items() if v}
    log.info('%s/%s: %d proteins, %d clusters, %d residues; positives %s',
             name, split, s['proteins'], s['clusters'], s['residues'], nonzero)  # fmt: skip


def find_file(manual_dir, explicit: str | None, patterns: Sequence[str], what: str, required=True):
  """Finds one input file under `manual_dir` (recursively).

  Args:
    manual_dir: the TFDS manual dir.
    explicit: a path given by the user; absolute, or relative to `manual_dir`.
    patterns: glob patterns tried in order when `explicit` is None.
    what: what the file is, for error messages.
    required: if False, a missing file returns None.

  Raises:
    FileNotFoundError naming every path and pattern tried; ValueError when a
    pattern matches several files (pass the file name explicitly then).
  """
  import pathlib

  root = pathlib.Path(manual_dir)
  if explicit is not None:
    path = pathlib.Path(explicit)
    path = path if path.is_absolute() else root / path
    if not path.is_file():
      raise FileNotFoundError(f'{what}: {path} does not exist')
    return path
  for pattern in patterns:
    hits = sorted(p for p in root.rglob(pattern) if p.is_file())
    if len(hits) > 1:
      raise ValueError(f'{what}: several files match {pattern!r} under {root}: '
                       f'{[str(h) for h in hits]}; name one explicitly')  # fmt: skip
    if hits:
      return hits[0]
  if required:
    raise FileNotFoundError(f'{what}: no file under {root} matches any of {list(patterns)}')
  return None
