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

import logging
import pathlib

log = logging.getLogger(__name__)


def text(x) -> str:
  """A TFDS text feature (bytes) or a str, as str."""
  return x.decode() if isinstance(x, bytes) else str(x)


def _tfds():
  import tensorflow_datasets as tfds

  import ptmjax.data.builders  # noqa: F401  (registers the yaam and ptmdb builders)

  return tfds


def build(name: str, manual_dir, data_dir, config: str | None = None, **builder_kwargs):
  """Builds a ptmjax dataset into `data_dir` as array_record; returns the builder.

  What `ptmjax data build` runs. Rebuilding an existing dataset is a no-op
  (TFDS reuses it); delete its folder to rebuild.
  """
  tfds = _tfds()
  manual_dir = pathlib.Path(manual_dir).expanduser().resolve()
  if not manual_dir.is_dir():
    raise FileNotFoundError(f'manual dir {manual_dir} does not exist')
  full = f'{name}/{config}' if config else name
  builder = tfds.builder(full, data_dir=str(pathlib.Path(data_dir).expanduser()), **builder_kwargs)
  builder.download_and_prepare(
    file_format='array_record',
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)),
  )
  return builder


def load(name: str, data_dir, config: str | None = None):
  """{split: random-access data source} of a built dataset (no TensorFlow)."""
  full = f'{name}/{config}' if config else name
  builder = _tfds().builder(full, data_dir=str(pathlib.Path(data_dir).expanduser()))
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


def training_examples(data_cfg) -> tuple[list, dict]:
  """The training split plus `data.extra` datasets, less homologs of `data.exclude_homologs_of`.

  Returns:
    (examples, info) where info counts proteins per source and those removed.
  """
  specs = [main_spec(data_cfg, data_cfg.train_split), *data_cfg.get('extra', ())]
  parts = {spec: examples(data_cfg, spec) for spec in specs}
  info = {'sources': {k: len(v) for k, v in parts.items()}}
  train = [ex for part in parts.values() for ex in part]
  exclude = data_cfg.get('exclude_homologs_of') or ''
  if exclude:
    from ptmjax.data import homology

    refs = {f'ref{i}': ex['sequence'] for i, ex in enumerate(examples(data_cfg, exclude))}
    train, removed = homology.remove_homologs(train, refs)
    info['homologs_removed'] = len(removed)
    info['homologs_of'] = exclude
    log.info('removed %d training proteins homologous to %s', len(removed), exclude)
  info['proteins'] = len(train)
  return train, info
