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
import os
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


SHARDS_FILE = 'ptmjax_shards.json'  # beside a built dataset: each shard's size in bytes


def input_files(name: str, manual_dir, **builder_kwargs) -> tuple[list[pathlib.Path], int]:
  """The files under `manual_dir` that the `name` builder reads, and how many others it
  ignores (a notes.txt beside the inputs used to block every rebuild)."""
  root = pathlib.Path(manual_dir)
  every = [p for p in sorted(root.rglob('*')) if p.is_file() and p.suffix.lower() != '.md']
  if name == 'yaam':
    from ptmjax.data import schema
    from ptmjax.data.builders.yaam import yaam_dataset_builder as yb

    found = [
      schema.find_file(root, builder_kwargs.get(key), patterns, what, required=False)
      for key, patterns, what in (
        ('yaam_file', yb.YAAM_PATTERNS, 'YAAM export'),
        ('proteome_file', yb.PROTEOME_PATTERNS, 'S288C proteome'),
      )
    ]
    used = [p for p in found if p is not None]
  elif name == 'ptmdb':
    from ptmjax.data.builders.ptmdb import parse

    skipped = {pathlib.Path(p) for p in parse.discover(root).unrecognised}
    used = [p for p in every if p not in skipped]
  else:
    used = every
  return used, len([p for p in every if p not in set(used)])


def _shard_sizes(data_path) -> dict[str, int]:
  return {p.name: p.stat().st_size for p in sorted(pathlib.Path(data_path).glob('*.array_record*'))}


def build(name: str, manual_dir, data_dir, config: str | None = None, force: bool = False,
          **builder_kwargs):  # fmt: skip
  """Builds a ptmjax dataset into `data_dir` as array_record; returns the builder.

  What `ptmjax data build` runs. The inputs' sha256 are recorded beside the dataset:
  building again from the same files reuses it; from changed files is an error that
  names them (it used to reuse the old build silently), unless `force` rebuilds.
  """

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
  used, ignored = input_files(name, manual_dir, **builder_kwargs)
  if ignored:
    log.info('%s: %d file(s) the %s builder does not read are ignored', manual_dir, ignored, name)
  used = set(used)
  # Relative keys are files under the manual dir; absolute ones are explicit files.
  inputs = {
    k: v
    for k, v in input_digests(manual_dir, *files).items()
    if pathlib.Path(k).is_absolute() or manual_dir / k in used
  }
  record = pathlib.Path(builder.data_path) / INPUTS_FILE
  if builder.is_prepared() and not force:
    old = json.loads(record.read_text()) if record.is_file() else None
    # Files a build recorded that this builder does not read (a record from before
    # `input_files`) are not a change.
    changed = sorted(k for k in inputs if old is not None and old.get(k) != inputs[k])
    if changed:
      raise InputError(
        builder.data_path,
        None,
        f'{full} was built from other input files (changed or added: '
        f'{changed[:5]}{" ..." if len(changed) > 5 else ""}); rebuild with '
        f'`ptmjax data build ... --force`, or use another --data-dir',
      )
    return builder
  if builder.is_prepared():  # --force: build beside it, swap only when the build succeeded
    return _rebuild(full, data_dir, builder, manual_dir, inputs, builder_kwargs)
  _prepare(tfds, builder, manual_dir, inputs)
  return builder


def _prepare(tfds, builder, manual_dir, inputs) -> None:
  builder.download_and_prepare(
    file_format='array_record',
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)),
  )
  pathlib.Path(builder.data_path, INPUTS_FILE).write_text(json.dumps(inputs, indent=1) + '\n')
  sizes = _shard_sizes(builder.data_path)
  pathlib.Path(builder.data_path, SHARDS_FILE).write_text(json.dumps(sizes, indent=1) + '\n')


def _rebuild(full, data_dir, old_builder, manual_dir, inputs, builder_kwargs):
  """`data build --force`: the new build goes into a scratch data dir; the working dataset
  is replaced only once it succeeded (it used to be deleted first, and a failed parse
  then left no dataset at all)."""
  import shutil

  tfds = _tfds()
  root = pathlib.Path(data_dir).expanduser()
  scratch = root / f'.rebuild-{os.getpid()}'
  try:
    new = tfds.builder(full, data_dir=str(scratch), **builder_kwargs)
    _prepare(tfds, new, manual_dir, inputs)
    target = pathlib.Path(old_builder.data_path)
    aside = target.with_name(target.name + f'.old-{os.getpid()}')
    target.rename(aside)
    pathlib.Path(new.data_path).rename(target)
    shutil.rmtree(aside)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return tfds.builder(full, data_dir=str(root), **builder_kwargs)


def check_shards(builder, full: str, data_dir) -> None:
  """Every shard of a built dataset: its size as written at build time, readable, with the
  record count of the metadata. A damaged dataset is one line naming the file and the
  rebuild command (it was a 40-line Riegeli error at the first batch)."""
  from ptmjax.data.records import InputError

  name, _, config = full.partition('/')
  rebuild = (
    f'rebuild it: `ptmjax data build {name}' + (f' --config {config}' if config else '')
    + f' --manual-dir RAW_FILES --data-dir {data_dir} --force`'
  )  # fmt: skip
  path = pathlib.Path(builder.data_path)
  sizes_file = path / SHARDS_FILE
  if sizes_file.is_file():
    for shard, size in json.loads(sizes_file.read_text()).items():
      f = path / shard
      if not f.is_file():
        raise InputError(f, None, f'shard missing from the dataset; {rebuild}')
      if f.stat().st_size != size:
        raise InputError(
          f, None, f'{f.stat().st_size} bytes, {size} when built (truncated?); {rebuild}'
        )
  try:
    sources = builder.as_data_source()
    for split, src in sources.items():
      expected = builder.info.splits[split].num_examples
      if len(src) != expected:
        raise InputError(path, None, f'split {split}: {len(src)} records, metadata says '
                         f'{expected}; {rebuild}')  # fmt: skip
      if len(src):
        src[len(src) - 1]  # reads the last block: a cut file fails here, not mid-training
  except InputError:
    raise
  except Exception as e:  # noqa: BLE001 - array_record raises bare RuntimeErrors
    first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    raise InputError(path, None, f'a shard cannot be read ({first}); {rebuild}') from None


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
  if not paths.is_remote(data_dir):
    check_shards(builder, full, data_dir)
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
  main = main_spec(data_cfg, data_cfg.train_split)
  specs = [main, *data_cfg.get('extra', ())]
  parts = {spec: examples(data_cfg, spec) for spec in specs}
  info = {'sources': {k: len(v) for k, v in parts.items()}}
  # Taxa dropped from the extra datasets only: a joint run on YAAM plus ptmDB keeps its
  # yeast target and drops ptmDB's S. cerevisiae entries (which contradict YAAM).
  extra_taxa = {int(t) for t in data_cfg.get('extra_exclude_taxa', ())}
  if extra_taxa:
    for spec in specs[1:]:
      kept = [ex for ex in parts[spec] if int(ex['taxon_id']) not in extra_taxa]
      info.setdefault('extra_taxa_removed', {})[spec] = len(parts[spec]) - len(kept)
      parts[spec] = kept
  main_ids = {id(ex) for ex in parts[main]}  # the filters below keep the same dicts
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
  # The mixing ratio of a joint run: the main dataset's proteins k times per epoch.
  repeat = int(data_cfg.get('main_repeat', 1))
  if repeat < 1:
    raise ValueError(f'data.main_repeat must be >= 1, not {repeat}')
  if repeat > 1:
    train = train + [ex for ex in train if id(ex) in main_ids] * (repeat - 1)
    info['main_repeat'] = repeat
  info['proteins'] = len(train)
  return train, info
