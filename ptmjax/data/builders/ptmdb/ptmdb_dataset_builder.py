"""ptmDB: multi-organism per-residue PTM sites from dbPTM, UniProt and annotated FASTA.

One config per raw format, and `all`, which merges every recognised file in the
manual dir (records of one accession are united across files). Types a file
does not annotate are -1, not 0.

Build (no TensorFlow needed):

    ptmjax data build ptmdb --config all --manual-dir ../shared/data/multiorganism --data-dir ~/tfds

Load:

    import ptmjax.data.builders, tensorflow_datasets as tfds
    source = tfds.builder('ptmdb/all', data_dir='~/tfds').as_data_source()

Stage-1 training should drop proteins homologous to the stage-2 test set:
`ptmjax.data.homology.remove_homologs(examples, yaam_test_sequences)`.
"""

from __future__ import annotations

import dataclasses
import logging

import tensorflow_datasets as tfds

from ptmjax.data import homology, schema
from ptmjax.data.builders.ptmdb import parse as ptmdb
from ptmjax.data.records import Tally

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PtmdbConfig(tfds.core.BuilderConfig):
  formats: tuple[str, ...] = ptmdb.FORMATS
  split_seed: int = 0
  min_seq_id: float = homology.MIN_SEQ_ID
  coverage: float = homology.COVERAGE


class Builder(tfds.core.GeneratorBasedBuilder):
  """Multi-organism PTM dataset, split by MMseqs2 clusters."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'dbPTM tables, UniProt MOD_RES exports and annotated FASTA.'}
  BUILDER_CONFIGS = [
    PtmdbConfig(name='dbptm', formats=('dbptm',), description='dbPTM site tables'),
    PtmdbConfig(name='uniprot', formats=('uniprot',), description='UniProt MOD_RES exports'),
    PtmdbConfig(
      name='annotated_fasta', formats=('annotated_fasta',), description="'#'-annotated FASTA"
    ),
    PtmdbConfig(name='all', formats=ptmdb.FORMATS, description='every recognised file, merged'),
  ]
  DEFAULT_CONFIG_NAME = 'all'
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Put any of these in the manual dir (searched recursively):
    - UniProt table exports (.csv/.tsv) with columns Entry, Organism, Sequence,
      Modified residue (and optionally Organism (ID));
    - annotated FASTA (.fasta/.fa), '#' after each modified residue, declared in
      {ptmdb.MANIFEST_NAME} as `file-pattern<TAB>ptm_type<TAB>residues`
      (default: {[(e.pattern, e.channel, e.residues) for e in ptmdb.DEFAULT_MANIFEST]});
    - dbPTM site tables (6 tab-separated columns, no header) plus a UniProt
      FASTA holding their sequences.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=schema.features(),
      homepage='https://biomics.lab.nycu.edu.tw/dbPTM/',
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    tally = Tally()
    records = ptmdb.parse_manual_dir(dl_manager.manual_dir, cfg.formats, tally)
    records = ptmdb.merge_records(records, tally)
    tally.log(f'ptmdb/{cfg.name} {dl_manager.manual_dir}')
    splits = schema.make_splits(records, cfg.split_seed, cfg.min_seq_id, cfg.coverage)
    meta = schema.metadata(
      tally,
      splits,
      formats=list(cfg.formats),
      manual_dir=str(dl_manager.manual_dir),
      split_seed=cfg.split_seed,
      min_seq_id=cfg.min_seq_id,
      coverage=cfg.coverage,
      organisms=_top_organisms(records),
    )
    self.info.metadata.update(meta)
    schema.log_summary(f'ptmdb/{cfg.name}', meta)
    return {name: self._generate_examples(items) for name, items in splits.items()}

  def _generate_examples(self, items):
    for record, cluster in items:
      yield record.id, schema.example(record, cluster)


def _top_organisms(records, n=20) -> dict[str, int]:
  counts: dict[str, int] = {}
  for r in records:
    counts[r.organism] = counts.get(r.organism, 0) + 1
  return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:n])
