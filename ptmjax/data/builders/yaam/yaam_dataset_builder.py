"""YAAM: per-residue PTM labels of ~4,860 S. cerevisiae proteins, one channel per section.

Build (no TensorFlow needed):

    ptmjax data build yaam --manual-dir ../shared/data --data-dir ~/tfds

Load:

    import ptmjax.data.builders, tensorflow_datasets as tfds
    source = tfds.builder('yaam', data_dir='~/tfds').as_data_source()
    source['train'][0]  # {'id': b'YAL005C', 'labels': int8[L, T], ...}

The `unlabeled` split holds the proteome proteins with no YAAM annotation
(all labels -1), for masked-LM pretraining.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib

import tensorflow_datasets as tfds

from ptmjax.data import homology, schema
from ptmjax.data.builders.yaam import parse as yaam
from ptmjax.data.records import InputError, Tally

log = logging.getLogger(__name__)

SGD_PROTEOME_URL = (
  'https://downloads.yeastgenome.org/sequence/S288C_reference/orf_protein/orf_trans_all.fasta.gz'
)
YAAM_PATTERNS = ('yaam*.txt', 'yaam*.txt.gz')
DOWNLOAD_TIMEOUT_S = 60
PROTEOME_PATTERNS = ('orf_trans_all.fasta*', '*s288c*.fa*', '*S288C*.fa*')


@dataclasses.dataclass
class YaamConfig(tfds.core.BuilderConfig):
  split_seed: int = 0
  min_seq_id: float = homology.MIN_SEQ_ID
  coverage: float = homology.COVERAGE


def download_once(url: str, dest: pathlib.Path, manual) -> pathlib.Path:
  """One attempt, a bounded wait: offline, TFDS's download manager retried for minutes
  and ended in a traceback. A failure names the file to pass instead."""
  import shutil
  import urllib.error
  import urllib.request

  if dest.is_file():
    return dest
  dest.parent.mkdir(parents=True, exist_ok=True)
  tmp = dest.with_suffix('.part')
  try:
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as r, open(tmp, 'wb') as f:
      shutil.copyfileobj(r, f)
  except (urllib.error.URLError, OSError) as e:
    tmp.unlink(missing_ok=True)
    reason = getattr(e, 'reason', e)
    raise FileNotFoundError(
      f'S288C proteome: no file in {manual} matches {list(PROTEOME_PATTERNS)}, and {url} '
      f"could not be downloaded ({reason}); pass --proteome-file PATH (SGD's "
      'orf_trans_all.fasta.gz) or put it in the manual dir'
    ) from None
  tmp.replace(dest)
  return dest


class Builder(tfds.core.GeneratorBasedBuilder):
  """YAAM per-residue PTM dataset, split by MMseqs2 clusters."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'YAAM 12/15/2021 export on the S288C R64 proteome.'}
  BUILDER_CONFIGS = [YaamConfig(name='default', description='15 YAAM sections, 30 % id clusters')]
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Put in the manual dir (searched recursively; other names via yaam_file= / proteome_file=,
  or `ptmjax data build yaam --yaam-file ... --proteome-file ...`):
    - the YAAM text export, matching {YAAM_PATTERNS} (e.g. yaam_dec15_21.txt);
    - optionally the S288C proteome, matching {PROTEOME_PATTERNS}: SGD's
      orf_trans_all.fasta[.gz] or a FASTA with `>ORF GENE` headers. Without it,
      {SGD_PROTEOME_URL} is downloaded.
  """

  def __init__(
    self, *, yaam_file=None, proteome_file=None, proteome_url=SGD_PROTEOME_URL, **kwargs
  ):
    self._yaam_file, self._proteome_file, self._proteome_url = (
      yaam_file,
      proteome_file,
      proteome_url,
    )
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=schema.features(),
      homepage='https://yaam.ifc.unam.mx/',
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    manual = dl_manager.manual_dir
    yaam_path = schema.find_file(manual, self._yaam_file, YAAM_PATTERNS, 'YAAM export')
    proteome_path = schema.find_file(
      manual, self._proteome_file, PROTEOME_PATTERNS, 'S288C proteome', required=False
    )
    if proteome_path is None:
      log.info('no proteome file in %s; downloading %s', manual, self._proteome_url)
      proteome_path = download_once(
        self._proteome_url, pathlib.Path(dl_manager.download_dir) / 'orf_trans_all.fasta.gz', manual
      )
    tally = Tally()
    proteome = yaam.read_proteome(proteome_path, tally)
    parsed = yaam.parse_yaam(yaam_path, proteome, tally)
    tally.log(f'YAAM {yaam_path}')
    if not parsed.labeled:
      # An empty or all-rejected export would build a dataset with no splits, which
      # training then trips over far from the cause.
      counts = ', '.join(f'{k}={v}' for k, v in sorted(tally.items())) or 'nothing read'
      raise InputError(yaam_path, None, f'no usable YAAM rows ({counts})')
    splits = schema.make_splits(parsed.labeled, cfg.split_seed, cfg.min_seq_id, cfg.coverage)
    meta = schema.metadata(
      tally,
      splits,
      yaam_version=parsed.version,
      yaam_file=str(yaam_path),
      proteome_file=str(proteome_path),
      split_seed=cfg.split_seed,
      min_seq_id=cfg.min_seq_id,
      coverage=cfg.coverage,
    )
    meta['unlabeled_proteins'] = len(parsed.unlabeled)
    self.info.metadata.update(meta)
    schema.log_summary('yaam', meta)
    gens = {name: self._generate_examples(items) for name, items in splits.items()}
    gens['unlabeled'] = self._generate_examples([(r, r.id) for r in parsed.unlabeled])
    return gens

  def _generate_examples(self, items):
    for record, cluster in items:
      yield record.id, schema.example(record, cluster)
