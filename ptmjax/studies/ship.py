r"""Turns a trained yeast run into a shipped model folder with its model card.

    ptmjax train --config shipped:STUDY/stage0/final --workdir runs/shipped \
      --config.data.data_dir=tfds_data
    python -m ptmjax.studies.ship --run runs/shipped --data-dir tfds_data \
      --proteome ../shared/data/yeast/s288c_r64_proteins.fasta

writes `ptmjax/shipped/yeast-proteinbert-small/`:

    params.npz, ptmjax_model.json   float16 weights, digest-checked (`checkpoint.save_compact`)
    MODEL_CARD.md                   generated here: data, split, test metrics with intervals,
                                    baselines, calibration, thresholds, use and limits
    card.json                       the card's numbers (`ptmjax models` prints its summary)
    known_sites.json                the training proteins' annotated sites, by sequence
                                    (`predict` marks a known protein's sites as such)
    example.fasta                   the first proteins of the S288C proteome (README's command)

Every number of the card comes from the stage comparison's own code on the same split:
the test proteins of `compare:small-proteinbert`, scored with `compare_stats.compare`
(intervals over homology clusters of the test split, model-minus-baseline differences
paired on the same resamples), against the baselines the study fits on the same training
proteins. Nothing here chooses anything on test: thresholds and the Platt maps come from
validation.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import pathlib
import sys

import jax
import numpy as np
from flax import nnx

from ptmjax import checkpoint as ckpt
from ptmjax import sites, zoo
from ptmjax.configs import compare as compare_configs
from ptmjax.data import ptm_types, records, sources
from ptmjax.data.candidates import Candidates
from ptmjax.evaluation import bootstrap, metrics, scoring
from ptmjax.run_dir import RunDir
from ptmjax.studies import compare, compare_stats

log = logging.getLogger(__name__)

STUDY = 'small-proteinbert'
NAME = zoo.DEFAULT
EXAMPLE_FILE = 'example.fasta'
EXAMPLE_PROTEINS = 20
CITATIONS = (
  ('YAAM (the yeast sites)',
   'YAAM, Yeast Amino Acid Modifications database, export of 12/15/2021 as published in '
   'the repository cjGO/yaamformer (data/yaam_dec15_21.txt); cite the database as its web '
   'site asks, and the publication (Pmid column) of each site you use'),
  ('dbPTM (multi-organism sites; stage-0 sequences)',
   'Li et al., dbPTM in 2022: an updated database for exploring regulatory networks and '
   'functional associations of protein post-translational modifications, Nucleic Acids '
   'Research 50:D471 (2022), doi:10.1093/nar/gkab1017'),
  ('UniProt (Swiss-Prot MOD_RES; stage-0 sequences)',
   'The UniProt Consortium, UniProt: the Universal Protein Knowledgebase in 2023, '
   'Nucleic Acids Research 51:D523 (2023), doi:10.1093/nar/gkac1052'),
  ('SGD (the S288C R64 proteome)',
   'Engel et al., The reference genome sequence of Saccharomyces cerevisiae: then and now, '
   'G3 4:389 (2014), doi:10.1534/g3.113.008995'),
  ('ProteinBERT (the encoder architecture)',
   'Brandes et al., ProteinBERT: a universal deep-learning model of protein sequence and '
   'function, Bioinformatics 38:2102 (2022), doi:10.1093/bioinformatics/btac020'),
)  # fmt: skip


def study_config(data_dir):
  config = compare_configs.get_config(STUDY)
  config.data_dir = str(data_dir)
  return config


def at_threshold(y, s, threshold) -> dict:
  """Precision and recall of the calls `s >= threshold`, with the number of calls."""
  tp, fp, fn, _ = metrics.confusion(y, s, threshold)
  calls = tp + fp
  return {
    'calls': int(calls),
    'precision': float(tp / calls) if calls else float('nan'),
    'recall': float(tp / (tp + fn)) if tp + fn else float('nan'),
  }


def threshold_table(flats, scores, candidates, channels, thresholds, clusters) -> dict:
  """{channel: {threshold, validation: {...}, test: {..., precision_ci}}}: what a call at the
  stored threshold (best F1 on validation) means on held-out proteins."""
  counts = bootstrap.cluster_resamples(clusters, 1000, seed=3)
  group = np.searchsorted(flats['test'].offsets, np.arange(len(flats['test'].residues)), 'right')
  out = {}
  for name in channels:
    if name not in thresholds:
      continue
    t = float(thresholds[name])
    row = {'threshold': t}
    for split in ('validation', 'test'):
      keep, y, s = compare_stats.targets(
        flats[split], scores[split], candidates, name, list(channels)
      )
      row[split] = at_threshold(y, s, t)
    keep, y, s = compare_stats.targets(flats['test'], scores['test'], candidates, name, [])
    g = group[keep] - 1
    called = s >= t
    boots = []
    for w in counts:
      wt = w[g]
      c = float((wt * called).sum())
      boots.append(float((wt * (called & y)).sum()) / c if c else np.nan)
    row['test']['precision_ci'] = bootstrap.interval(np.asarray(boots))
    out[name] = row
  return out


def known_sites(train_examples, channels) -> dict:
  """{sequence key: {channel: [1-based positions]}} of the training proteins' sites."""
  idx = [(c, ptm_types.INDEX[c]) for c in channels]
  out = {}
  for ex in train_examples:
    labels = np.asarray(ex['labels'])
    entry = {c: (np.flatnonzero(labels[:, i] == 1) + 1).tolist() for c, i in idx}
    entry = {c: v for c, v in entry.items() if v}
    if entry:
      out[sites.sequence_key(sources.text(ex['sequence']))] = entry
  return out


def evaluate(model_dir, data_dir, n_boot: int | None = None) -> dict:
  """The card's numbers: the model (the shipped float16 weights, as users get them) and
  the study's baselines on the study's test split."""
  config = study_config(data_dir)
  if n_boot:
    config.report.bootstrap = n_boot
  meta = ckpt.read_meta(model_dir)
  info = meta.get('info', {})
  candidates = Candidates.from_json(info['candidates'])
  val, test = compare._examples(config, 'validation'), compare._examples(config, 'test')
  flats = {'validation': compare._flat(val), 'test': compare._flat(test)}
  model, tokenizer, _ = ckpt.load_model(model_dir)
  max_len = info['config']['data']['max_len']
  scores = {}
  for split, exs in (('validation', val), ('test', test)):
    log.info('scoring %d %s proteins', len(exs), split)
    scores['single', 0, split] = scoring.predict_flat(model, tokenizer, exs, max_len=max_len)[1]
  mods = compare.trained_mods(config)
  channels = compare.report_channels(config, flats['test'], candidates)
  log.info('fitting the baselines on the training proteins')
  scores.update(compare.baseline_scores(config, flats, candidates, channels, mods))
  clusters = [sources.text(ex.get('cluster', '')) or sources.text(ex['id']) for ex in test]
  calibration = info.get('calibration') or {}
  results = compare_stats.compare(
    config, flats['validation'], flats['test'], scores, candidates, channels, mods,
    {('single', 0): calibration}, clusters,
  )  # fmt: skip
  own = {s: scores['single', 0, s] for s in ('validation', 'test')}
  thresholds = threshold_table(
    flats, own, candidates, channels, info.get('thresholds') or {}, clusters
  )
  single = compare._stage_config(config.single, seed=0, data_dir=config.data_dir, init=None)
  train = sources.training_examples(single.data)[0]
  return {
    'results': results,
    'thresholds': thresholds,
    'channels': channels,
    'calibration': calibration,
    'split': {
      'train': len(train),
      'validation': len(val),
      'test': len(test),
      'test_clusters': len(set(clusters)),
    },  # fmt: skip
    'bootstrap': config.report.bootstrap,
    'known': known_sites(train, info.get('channels') or channels),
    'meta': meta,
    'num_params': int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))),
  }


def _ci(lo_hi) -> str:
  lo, hi = lo_hi
  return f'[{lo:.3f}, {hi:.3f}]'


def summary(ev) -> str:
  arms = ev['results'][ev['channels'][0]]['views']['pooled']['arms']['single']
  name = ev['channels'][0]
  return (
    f'S. cerevisiae PTM sites ({", ".join(ev["channels"])}); ProteinBERT-small; '
    f'test {name} AUROC {arms["auroc"]:.3f}'
  )


def card_data(ev, model_name: str) -> dict:
  """The card's numbers, machine-readable."""
  rows = {}
  for name, row in ev['results'].items():
    pooled = row['views']['pooled']
    arms, diffs = pooled['arms'], pooled['differences']
    rows[name] = {
      'test_sites': row['test_sites'],
      'test_residues': row['test_residues'],
      'model': {k: arms['single'][k] for k in ('auroc', 'auroc_ci', 'auprc', 'auprc_ci')},
      'baselines': {
        b: {'auroc': arms[b]['auroc'], 'auprc': arms[b]['auprc']}
        for b in compare_stats.BASELINES
        if b in arms
      },  # fmt: skip
      'minus_baseline': {
        k.split('-', 1)[1]: {m: diffs[k][m] for m in ('auroc', 'auroc_ci', 'auprc', 'auprc_ci')}
        for k in diffs
        if k.startswith('single-')
      },
      'ece': row.get('calibration', {}).get('single', {}),
    }
  return {
    'name': model_name,
    'summary': summary(ev),
    'channels': ev['channels'],
    'split': ev['split'],
    'bootstrap': ev['bootstrap'],
    'test': rows,
    'thresholds': ev['thresholds'],
    'params_sha256': ev['meta'].get('params_sha256'),
  }


def _card_head(ev, data) -> list[str]:
  """Title, what it predicts, the model and its training."""
  info = ev['meta'].get('info', {})
  run_info = ev['run_info']
  cfg = info.get('config', {})
  optim = cfg.get('optim', {})
  model_cfg = ev['meta'].get('model', {})
  num_params = ev.get('num_params')
  lines = [
    f'# {data["name"]}',
    '',
    f'{data["summary"]}. Generated by `ptmjax/studies/ship.py`; do not edit by hand.',
    '',
    '## What it predicts',
    '',
    'Per residue, the probability that a candidate residue is an annotated site of each '
    'channel: '
    + ', '.join(f'{c} ({info["candidates"].get(c, "?")})' for c in data['channels'])
    + '. Non-candidate residues get no score (NA). `ptmjax predict --format sites` lists '
    "the residues at or above each channel's threshold with their +/-7 context.",
    '',
    '## Model',
    '',
    f'- Encoder: ProteinBERT family (`{model_cfg.get("family", "?")}`), '
    + (f'{num_params:,} parameters, ' if num_params else '')
    + 'stored as float16 (`params.npz`; the digest in `ptmjax_model.json` is checked at load).',
    f'- Windows of {cfg.get("data", {}).get("max_len")} residues; longer proteins are '
    'predicted in overlapping stitched windows.',
    f'- Parameter digest: `{data["params_sha256"]}`.',
    '',
    '## Training',
    '',
    '- Stage 0 (shared with the stage comparison): masked-LM pretraining from scratch on '
    'YAAM training proteins, the unlabeled rest of the S288C proteome and ptmDB training '
    'proteins, less every protein homologous to a YAAM validation or test protein '
    '(`ptmjax/configs/pretrain.py`, `small`).',
    "- Fine-tuning: YAAM training proteins only (the study's single-stage arm, seed 0, the "
    'recipe its validation chose; `ptmjax/configs/shipped.py`), '
    f'peak learning rate {optim.get("lr")}, at most {optim.get("total_steps")} steps; '
    f'stopped early at step {info.get("last_step")} (patience on validation '
    f'`{cfg.get("checkpoint", {}).get("best_metric")}`), the weights of step {info.get("step")} '
    'kept (its best validation evaluation).',
    f'- Trained weights (float32) digest `{ev.get("trained_sha256")}`'
    + (
      f"; {'equal to' if ev['study_match'] else 'DIFFERENT from'} the study's `seed0/single` "
      'run (the same recipe, retrained: training is deterministic on CPU).'
      if ev.get('study_match') is not None
      else '.'
    ),
    f'- Data: YAAM export of 12/15/2021 on the SGD S288C R64 proteome; '
    f'{run_info.get("data", {}).get("proteins", "?")} training proteins after removing '
    f'{run_info.get("data", {}).get("homologs_removed", "?")} homologous to validation/test.',
    f'- Split: homology-aware (MMseqs2 clusters; no test protein has a close relative in '
    f'training): {data["split"]["train"]} train, {data["split"]["validation"]} validation, '
    f'{data["split"]["test"]} test proteins in {data["split"]["test_clusters"]} clusters.',
    '',
  ]
  return lines


def _card_results(data) -> list[str]:
  """Test metrics against the baselines, and calibration."""
  lines = [
    '## Test results',
    '',
    f'On the {data["split"]["test"]} test proteins, candidate residues with a known label. '
    f'95 % intervals resample whole homology clusters of the test split ({data["bootstrap"]} '
    'resamples); differences to a baseline are paired on the same resamples. One trained '
    'seed: the seed-to-seed spread is not in these intervals (the stage comparison, '
    '`results/compare_small_proteinbert`, measures it).',
    '',
    '| channel | sites / residues | AUROC [95 % CI] | AUPRC [95 % CI] | window LR AUROC '
    '| AUROC minus window LR [95 % CI] | identity AUROC |',
    '|---|---|---|---|---|---|---|',
  ]
  for name, r in data['test'].items():
    m, b = r['model'], r['baselines']
    d = r['minus_baseline'].get('logreg')
    lines.append(
      f'| {name} | {r["test_sites"]:,} / {r["test_residues"]:,} | {m["auroc"]:.3f} '
      f'{_ci(m["auroc_ci"])} | {m["auprc"]:.3f} {_ci(m["auprc_ci"])} | '
      f'{b.get("logreg", {}).get("auroc", float("nan")):.3f} | '
      + (f'{d["auroc"]:+.3f} {_ci(d["auroc_ci"])}' if d else '-')
      + f' | {b.get("identity", {}).get("auroc", float("nan")):.3f} |'
    )
  lines += [
    '',
    'Window LR: L2 logistic regression on one-hot +/-15 windows, fitted on the same '
    "training proteins. Identity: the site rate of the residue's amino acid. "
    '`phosphorylation:ST` / `:Y` split the phosphorylation channel by residue; `any` ranks '
    'every residue by its highest channel.',
    '',
    '## Calibration',
    '',
    'Expected calibration error on test candidates (15 bins), raw and after the Platt map '
    'fitted on validation (`--calibrated`):',
    '',
    '| channel | ECE raw | ECE calibrated |',
    '|---|---|---|',
  ]
  for name, r in data['test'].items():
    if r['ece']:
      lines.append(
        f'| {name} | {r["ece"]["ece"]:.3f} | {r["ece"].get("ece_calibrated", float("nan")):.3f} |'
      )
  return lines


def _card_thresholds(data) -> list[str]:
  """What a call at each stored threshold means."""
  lines = [
    '',
    '## Thresholds: what a call means',
    '',
    "A residue is called when its probability reaches the channel's threshold (best F1 on "
    'validation during training). Expected precision is the share of calls that are '
    'annotated sites on held-out proteins:',
    '',
    '| channel | threshold | validation precision / recall | test precision [95 % CI] '
    '| test recall | test calls |',
    '|---|---|---|---|---|---|',
  ]
  for name, r in data['thresholds'].items():
    v, t = r['validation'], r['test']
    lines.append(
      f'| {name} | {r["threshold"]:.3f} | {v["precision"]:.2f} / {v["recall"]:.2f} | '
      f'{t["precision"]:.2f} {_ci(t["precision_ci"])} | {t["recall"]:.2f} | {t["calls"]:,} |'
    )
  return lines


def _card_use(command) -> list[str]:
  """Intended use and limits, how to reproduce, what to cite."""
  lines = [
    '',
    'Annotated means reported in YAAM: an unannotated residue is not known to be '
    'unmodified (most sites come from mass-spectrometry surveys with incomplete coverage), '
    'so precision here is a lower bound of the share of calls that are real sites.',
    '',
    '## Intended use and limits',
    '',
    '- *S. cerevisiae* proteins. Other organisms are untested; kinase and acetyltransferase '
    'specificities differ, and no number above speaks for them.',
    '- Ranking candidate residues for follow-up, not proof of modification. Use the '
    'calibrated probability (`--calibrated`, or the `calibrated` column of `--format '
    'sites`) where a probability is read as a frequency.',
    '- Proteins of the training split: their annotated sites are in `known_sites.json` and '
    '`predict` marks them (`known` column): a prediction there is not independent evidence. '
    'Test metrics hold for proteins without close homologs in training; a protein homologous '
    'to a training protein will look better than these numbers.',
    '- Channels with few training sites (succinylation) have wide intervals.',
    '',
    '## Reproduce',
    '',
    '```',
    command,
    '```',
    '',
    '## Cite the data',
    '',
  ]
  lines += [f'- {what}: {ref}' for what, ref in CITATIONS]
  return lines


def model_card(ev, data: dict, command: str) -> str:
  """MODEL_CARD.md, from `card_data` and the run's record."""
  lines = _card_head(ev, data) + _card_results(data) + _card_thresholds(data)
  lines += _card_use(command)
  return '\n'.join(lines) + '\n'


def write_example(proteome, out: pathlib.Path, n: int = EXAMPLE_PROTEINS) -> int:
  """The first `n` proteins of the proteome FASTA, as the README's first command reads."""
  kept = []
  for rec in records.read_fasta(proteome):
    kept.append(rec)
    if len(kept) == n:
      break
  text = ''.join(f'>{r.header}\n{r.sequence}\n' for r in kept)
  (out / EXAMPLE_FILE).write_text(text)
  return sum(len(r.sequence) for r in kept)


def ship(
  run, data_dir, out, *, proteome=None, n_boot=None, command='', study_run=None
) -> pathlib.Path:
  run = RunDir.at(run)
  out = pathlib.Path(out)
  ckpt.save_compact(run.final, out, {'name': out.name})
  ev = evaluate(out, data_dir, n_boot)
  ev['run_info'] = run.read_run_info()
  ev['trained_sha256'] = ckpt.read_meta(run.final).get('params_sha256')
  if study_run:
    ev['study_match'] = ckpt.read_meta(study_run).get('params_sha256') == ev['trained_sha256']
  data = card_data(ev, out.name)
  data['created'] = datetime.date.today().isoformat()
  (out / zoo.CARD_DATA).write_text(json.dumps(data, indent=2) + '\n')
  (out / zoo.CARD_FILE).write_text(model_card(ev, data, command))
  (out / sites.KNOWN_FILE).write_text(json.dumps(ev['known'], sort_keys=True) + '\n')
  if proteome:
    write_example(proteome, out)
  log.info('wrote %s (%d known training proteins)', out, len(ev['known']))
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog='python -m ptmjax.studies.ship', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
  p.add_argument('--run', required=True, help='the training work dir (runs/shipped)')
  p.add_argument('--data-dir', required=True, help='the TFDS data dir with yaam built')
  p.add_argument('--out', default=str(zoo.SHIPPED_ROOT / NAME))
  p.add_argument('--proteome', help='S288C proteome FASTA: its first proteins are the example')
  p.add_argument(
    '--study-run',
    help="the study's seed0/single model folder (archived): the "
    'card says whether the retrained weights equal it',
  )
  p.add_argument('--bootstrap', type=int, help="resamples (default: the study's)")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
  command = (
    'ptmjax train --config shipped:STUDY/stage0/final --workdir runs/shipped '
    '--config.data.data_dir=tfds_data\n'
    'python -m ptmjax.studies.ship --run runs/shipped --data-dir tfds_data '
    '--proteome s288c_r64_proteins.fasta \\\n'
    '  --study-run results/compare_small_proteinbert/archive/seed0/runs/seed0/single/final'
  )
  out = ship(
    args.run, args.data_dir, args.out, proteome=args.proteome, n_boot=args.bootstrap,
    study_run=args.study_run, command=command,
  )  # fmt: skip
  print(out)
  return 0


if __name__ == '__main__':
  sys.exit(main())
