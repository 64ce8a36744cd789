"""Where examples come from: building and loading datasets, and dataset specs.

A *dataset spec* names proteins as `name[/config]:split[+split...]`, e.g.
`yaam:validation+test`, `ptmdb/all:train` or `synthetic/source:train` (the
synthetic data of `ptmjax.data.synthetic`, generated in code). `examples()`
reads one into a list of dicts whose `id` and `sequence` are `str`: bytes from
TFDS are decoded here, once, so nothing downstream needs to.

TensorFlow Datasets is imported only when a TFDS dataset is built or loaded,
and the builders (`ptmjax.data.builders`) are registered with it then.
"""

from __future__ import annotations

import json
import logging
import pathlib

import numpy as np

log = logging.getLogger(__name__)


def text(x) -> str:
  """A TFDS text feature (bytes) or a str, as str."""
  return x.decode() if isinstance(x, bytes) else str(x)


def _tfds():
  import tensorflow_datasets as tfds

  import ptmjax.data.builders  # noqa: F401  (registers the yaam and ptmdb builders)

  return tfds


INPUTS_FILE = 'ptmjax_inputs.json'  # beside a built dataset: what it was built from


def input_digests(manual_dir, *files) -> dict[str, str]:
  """sha256 of every input file: the manual dir's files (READMEs aside) and explicit ones."""
  import hashlib

  root = pathlib.Path(manual_dir)
  paths = [p for p in sorted(root.rglob('*')) if p.is_file() and p.suffix.lower() != '.md']
  paths += [pathlib.Path(f) for f in files if f]
  out = {}
  for p in paths:
    h = hashlib.sha256()
    with open(p, 'rb') as f:
      for chunk in iter(lambda: f.read(1 << 20), b''):
        h.update(chunk)
    out[str(p.relative_to(root)) if p.is_relative_to(root) else str(p.resolve())] = h.hexdigest()
  return out


def build(name: str, manual_dir, data_dir, config: str | None = None, force: bool = False,
          **builder_kwargs):  # fmt: skip
  """Builds a ptmjax dataset into `data_dir` as array_record; returns the builder.

  What `ptmjax data build` runs. The inputs' sha256 are recorded beside the dataset:
  building again from the same files reuses it; from changed files is an error that
  names them (it used to reuse the old build silently), unless `force` rebuilds.
  """
  import shutil

  from ptmjax import paths
  from ptmjax.data.records import InputError

  # TFDS cannot build into gs:// (its array_record writer needs a local file system):
  # build here, then copy the folder to the bucket; training reads it from there.
  paths.require_local(data_dir, 'data dir of a build')
  tfds = _tfds()
  manual_dir = pathlib.Path(manual_dir).expanduser().resolve()
  if not manual_dir.is_dir():
    raise FileNotFoundError(f'manual dir {manual_dir} does not exist')
  full = f'{name}/{config}' if config else name
  builder = tfds.builder(full, data_dir=str(pathlib.Path(data_dir).expanduser()), **builder_kwargs)
  files = [v for k, v in builder_kwargs.items() if k.endswith('_file')]
  inputs = input_digests(manual_dir, *files)
  record = pathlib.Path(builder.data_path) / INPUTS_FILE
  if builder.is_prepared():
    old = json.loads(record.read_text()) if record.is_file() else None
    if force:
      shutil.rmtree(builder.data_path)
      builder = tfds.builder(
        full, data_dir=str(pathlib.Path(data_dir).expanduser()), **builder_kwargs
      )
    elif old is not None and old != inputs:
      changed = sorted(k for k in set(old) | set(inputs) if old.get(k) != inputs.get(k))
      raise InputError(
        builder.data_path,
        None,
        f'{full} was built from other input files (changed, added or removed: '
        f'{changed[:5]}{" ..." if len(changed) > 5 else ""}); rebuild with '
        f'`ptmjax data build ... --force`, or use another --data-dir',
      )
  built_now = not builder.is_prepared()
  builder.download_and_prepare(
    file_format='array_record',
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)),
  )
  if built_now:  # a build from before these records stays unrecorded: its inputs are unknown
    pathlib.Path(builder.data_path, INPUTS_FILE).write_text(json.dumps(inputs, indent=1) + '\n')
  return builder


def load(name: str, data_dir, config: str | None = None):
  """{split: random-access data source} of a built dataset (no TensorFlow)."""
  from ptmjax import paths

  paths.require_supported(data_dir, 'data dir')
  full = f'{name}/{config}' if config else name
  where = str(data_dir) if paths.is_remote(data_dir) else str(pathlib.Path(data_dir).expanduser())
  builder = _tfds().builder(full, data_dir=where)
  if not builder.is_prepared():
    build = f'ptmjax data build {name}' + (f' --config {config}' if config else '')
    raise FileNotFoundError(
      f'dataset {full} is not built in {data_dir} (no {builder.data_path}); build it with '
      f'`{build} --manual-dir RAW_FILES --data-dir {data_dir}`, or point data_dir at its build'
    )
  return builder.as_data_source()


def open_dataset(data_cfg, name: str, sub: str = '') -> dict:
  """{split: random-access source} of a TFDS dataset, or of 'synthetic' data generated
  in code (`sub` = 'source' or 'target' picks the synthetic variant)."""
  if name == 'synthetic':
    from ptmjax.data import synthetic

    s = data_cfg.synthetic
    variant = sub or s.variant
    prefix = 'SRC' if variant == 'source' else 'SYN'
    return synthetic.splits(s.num_proteins, s.seed, variant, prefix)
  return load(name, data_cfg.data_dir, sub or None)


def _decoded(ex) -> dict:
  return {**ex, 'id': text(ex['id']), 'sequence': text(ex['sequence'])}


def examples(data_cfg, spec: str) -> list[dict]:
  """Examples of a dataset spec, e.g. 'ptmdb/all:train' or 'yaam:train+unlabeled'."""
  if ':' not in spec:
    raise ValueError(f"dataset spec {spec!r} must look like 'name[/config]:split'")
  full, splits = spec.rsplit(':', 1)
  name, _, sub = full.partition('/')
  d = open_dataset(data_cfg, name, sub)
  out = []
  for split in splits.split('+'):
    if split not in d:
      raise ValueError(f'{spec}: split {split!r} not in {full} ({sorted(d)})')
    out.extend(_decoded(d[split][i]) for i in range(len(d[split])))
  return out


def main_spec(data_cfg, split: str) -> str:
  """The spec of `split` of a training config's own dataset (`data.name` / `data.config`)."""
  sub = data_cfg.get('config') or ''
  if data_cfg.name == 'synthetic':
    sub = sub or data_cfg.synthetic.variant
  return f'{data_cfg.name}{"/" + sub if sub else ""}:{split}'


def cluster_subset(train: list, fraction: float, seed: int = 0) -> list:
  """About `fraction` of the proteins, taking whole homology clusters in a fixed random
  order: no cluster is split, and the subset for a smaller fraction is inside the one
  for a larger fraction (a learning curve then adds proteins, never swaps them)."""
  if not 0 < fraction <= 1:
    raise ValueError(f'train_fraction must be in (0, 1], not {fraction}')

  def cluster(ex):
    return text(ex.get('cluster', '')) or ex['id']

  names = sorted({cluster(ex) for ex in train})
  rank = {names[i]: r for r, i in enumerate(np.random.default_rng(seed).permutation(len(names)))}
  ranks = np.array([rank[cluster(ex)] for ex in train])
  # The cluster in which the target count is reached is the last one taken, whole.
  target = max(1, round(fraction * len(train)))
  last = np.sort(ranks)[target - 1]
  return [ex for ex, r in zip(train, ranks, strict=True) if r <= last]


def training_examples(data_cfg) -> tuple[list, dict]:
  """The training split plus `data.extra` datasets, less homologs of `data.exclude_homologs_of`.

  Returns:
    (examples, info) where info counts proteins per source and those removed.
  """
  specs = [main_spec(data_cfg, data_cfg.train_split), *data_cfg.get('extra', ())]
  parts = {spec: examples(data_cfg, spec) for spec in specs}
  info = {'sources': {k: len(v) for k, v in parts.items()}}
  train = [ex for part in parts.values() for ex in part]
  taxa = {int(t) for t in data_cfg.get('exclude_taxa', ())}
  if taxa:
    kept = [ex for ex in train if int(ex['taxon_id']) not in taxa]
    info['taxa_removed'] = len(train) - len(kept)
    info['exclude_taxa'] = sorted(taxa)
    log.info('removed %d training proteins of taxa %s', len(train) - len(kept), sorted(taxa))
    train = kept
  fraction = float(data_cfg.get('train_fraction', 1.0))
  if fraction < 1.0:
    train = cluster_subset(train, fraction, data_cfg.get('fraction_seed', 0))
    info['train_fraction'] = fraction
  exclude = data_cfg.get('exclude_homologs_of') or ''
  if exclude:
    from ptmjax.data import homology

    refs = {f'ref{i}': ex['sequence'] for i, ex in enumerate(examples(data_cfg, exclude))}
    counts = {}
    train, removed = homology.remove_homologs(train, refs, counts=counts)
    info['homologs_removed'] = len(removed)
    info['homologs_found'] = counts  # per search direction (both ways: issue 25)
    info['homologs_of'] = exclude
    log.info('removed %d training proteins homologous to %s', len(removed), exclude)
  info['proteins'] = len(train)
  return train, info
