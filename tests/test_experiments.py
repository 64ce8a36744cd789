"""Every experiment config in a tiny form, the quickstart, and `ptmjax predict`."""

import csv
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import QUICK, REPO, json_numbers

from ptmjax import checkpoint, cli, predict
from ptmjax.data import ptm_types, synthetic
from ptmjax.studies.compare_stats import BASELINES


def _shrink(stage, steps=4):
  stage.optim.update(total_steps=steps, warmup_steps=1)
  stage.eval.update(every_steps=0)
  stage.log_every_steps = 2
  stage.progress = False


@pytest.mark.slow  # default suite time (issue 26): two processes stay in the default
# suite through tests/test_trainer.py's preempted two-process run
def test_compare_on_two_processes_gives_the_one_process_numbers(quickstart_dir, tmp_path):
  """`ptmjax compare --coordinator-address ...` on two processes on 127.0.0.1 (4 CPU
  devices each, the 8 of the one-process run): every stage trains on both, both score,
  process 0 alone writes; the report's numbers are the one-process ones."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        '-m',
        'ptmjax.cli',
        'compare',
        '--config',
        'compare:quickstart',
        '--workdir',
        str(tmp_path),
        *QUICK,
        '--coordinator-address',
        f'127.0.0.1:{port}',
        '--num-processes',
        '2',
        '--process-id',
        str(i),
      ],
      env=env,
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
    )  # fmt: skip
    for i in range(2)
  ]
  try:
    outs = [p.communicate(timeout=600)[0].decode() for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, out in zip(procs, outs, strict=True):
    assert p.returncode == 0, out[-3000:]
  one = json.loads((quickstart_dir / 'report' / 'results.json').read_text())
  two = json.loads((tmp_path / 'report' / 'results.json').read_text())
  assert '2 processes' in two['info']['machine']
  got, want = json_numbers(two['results']), json_numbers(one['results'])
  assert got.keys() == want.keys() and len(want) > 100
  np.testing.assert_allclose([got[k] for k in want], list(want.values()), atol=1e-5)
  # One writer: each run's time was added once, and no half-written file is left.
  for timing in tmp_path.rglob('timing.json'):
    assert json.loads(timing.read_text())['invocations'] == 1, timing
  assert not list(tmp_path.rglob('*.tmp'))


@pytest.mark.slow  # every stage compiles a ProteinBERT; test_proteinbert trains one end to end
def test_quickstart_with_proteinbert(tmp_path):
  """`ptmjax quickstart --family proteinbert`: every stage trains a ProteinBERT encoder."""
  overrides = ['--config.seeds=0', '--config.report.bootstrap=20']
  for stage in ('stage1', 'stage2', 'single'):
    overrides += [f'--config.{stage}.optim.total_steps=4', f'--config.{stage}.optim.warmup_steps=1']
    overrides += [f'--config.{stage}.eval.every_steps=2']
  assert cli.main(['quickstart', '--workdir', str(tmp_path), '--family', 'proteinbert',
                   *overrides]) == 0  # fmt: skip
  meta = checkpoint.read_meta(tmp_path / 'final')
  assert meta['model']['family'] == 'proteinbert' and meta['tokenizer']['unk'] == '<OTHER>'
  results = json.loads((tmp_path / 'report' / 'results.json').read_text())
  assert set(results['results']['phosphorylation']['views']['pooled']['arms']) == {
    *BASELINES,
    'single',
    'two',
  }


def test_quickstart_leaves_report_and_final_model(quickstart_dir):
  report = (quickstart_dir / 'report' / 'report.md').read_text()
  assert 'two-stage' in report and 'residue identity' in report
  for png in ('roc_pr.png', 'probability_histograms.png', 'serine_pca.png', 'learning_curves.png'):
    assert (quickstart_dir / 'report' / png).stat().st_size > 10_000
  results = json.loads((quickstart_dir / 'report' / 'results.json').read_text())
  phos = results['results']['phosphorylation']['views']['pooled']
  assert set(phos['arms']) == {*BASELINES, 'single', 'two'}
  lo, hi = phos['arms']['two']['auroc_ci']
  assert lo <= phos['arms']['two']['auroc'] <= hi
  # Every model arm against every baseline it is reported with, paired.
  assert {'two-single', 'single-logreg', 'two-window_composition'} <= set(phos['differences'])
  assert (
    'phosphorylation:ST' in results['results']
    and 'calibration' in results['results']['phosphorylation']
  )
  meta = checkpoint.read_meta(quickstart_dir / 'final')
  assert meta['info']['candidates']['phosphorylation'] == 'STY'
  assert set(meta['info']['thresholds']) >= {'phosphorylation', 'acetylation'}


def test_predict_long_protein_and_calls(quickstart_dir, tmp_path):
  """A protein longer than the training windows (256 tokens): every residue predicted once,
  equal to the model on that protein's windows; NA off-candidate; calls at the threshold."""
  final = quickstart_dir / 'final'
  p = predict.Predictor(final)
  assert p.max_len == 256
  seqs = {s['id'].decode(): s['sequence'].decode() for s in synthetic.generate(3, seed=5)}
  long_id = 'LONG'
  seqs[long_id] = (''.join(seqs.values()) * 3)[:700]
  fasta = tmp_path / 'in.fasta'
  fasta.write_text(''.join(f'>{k} test\n{v.lower()}\n' for k, v in seqs.items()))
  out = tmp_path / 'preds.tsv'
  assert cli.main(['predict', '--checkpoint', str(final), '--fasta', str(fasta),
                   '--out', str(out), '--calls']) == 0  # fmt: skip
  rows = list(csv.DictReader(out.open(), delimiter='\t'))
  assert len(rows) == sum(len(v) for v in seqs.values())
  long_rows = [r for r in rows if r['protein'] == long_id]
  assert [int(r['position']) for r in long_rows] == list(range(1, 701))
  assert ''.join(r['residue'] for r in long_rows) == seqs[long_id]
  for r in rows:
    if r['residue'] in 'STY':
      prob = float(r['phosphorylation'])
      assert 0 < prob < 1
      assert r['phosphorylation_call'] == str(int(prob >= p.thresholds['phosphorylation']))
    else:
      assert r['phosphorylation'] == 'NA' and r['phosphorylation_call'] == 'NA'
  # A short protein equals a direct forward pass of the model.
  short_id = next(iter(seqs))
  tokens, _ = p.tokenizer.batch([seqs[short_id]])
  logits = p.model(tokens, heads=('ptm',))['ptm'][0]
  direct = jax.nn.sigmoid(p.tokenizer.token_outputs_to_residues(logits, len(seqs[short_id])))
  got = p.predict({short_id: seqs[short_id]})[short_id]
  col = p.channels.index('phosphorylation')
  sty = np.isin(list(seqs[short_id]), list('STY'))
  np.testing.assert_allclose(
    got[sty, col], direct[sty, ptm_types.INDEX['phosphorylation']], atol=1e-5
  )


def test_predict_bad_fasta_names_the_record(quickstart_dir, tmp_path):
  fasta = tmp_path / 'bad.fasta'
  fasta.write_text('>ok\nMKS\n>broken\nMK1S\n')
  proc = subprocess.run(
    [sys.executable, '-m', 'ptmjax.cli', 'predict', '--checkpoint', str(quickstart_dir / 'final'),
     '--fasta', str(fasta), '--out', str(tmp_path / 'x.tsv')],
    capture_output=True, text=True, cwd=REPO,
  )  # fmt: skip
  assert proc.returncode == 2
  assert f"{fasta}:3: record 'broken'" in proc.stderr and 'Traceback' not in proc.stderr


@pytest.mark.slow  # ~4 min: every stage, four baselines and the stage-1 check on real data
def test_compare_tiny_on_real_data(real_tfds, tmp_path):
  """compare.py:tiny runs every stage config (pretrain, ptmdb, yaam, count pre-task) for a
  few steps on the real builds and writes the report, with the homology filter counted."""
  data_dir, _, _ = real_tfds
  assert (
    cli.main(['compare', '--config', str(REPO / 'ptmjax/configs/compare.py:tiny'),
              '--workdir', str(tmp_path), f'--config.data_dir={data_dir}'])
    == 0
  )  # fmt: skip
  results = json.loads((tmp_path / 'report' / 'results.json').read_text())
  # Both ways (issue 25): 398 stage-1 proteins hit YAAM validation/test searched forward,
  # 34 more only searched from YAAM's side.
  assert results['info']['homologs_removed'] == 398 + 34
  pooled = results['results']['phosphorylation']['views']['pooled']
  assert set(pooled['arms']) == {*BASELINES, 'single', 'two', 'count'}
  # The identity baseline's number is fixed by the data: S/T/Y rates from YAAM train.
  assert 0.6 < pooled['arms']['identity']['auroc'] < 0.7
  stage0 = json.loads((tmp_path / 'stage0' / 'run_info.json').read_text())
  assert stage0['data']['sources'] == {'yaam:train+unlabeled': 3890 + 1121, 'ptmdb/all:train': 7400}
  assert 'mlm_loss' in (tmp_path / 'stage0' / 'metrics.jsonl').read_text()


def test_a_finished_quickstart_with_other_settings_is_refused(quickstart_dir, tmp_path, capsys):
  """Issue 28 row 1: a finished quickstart re-run with another lr logged "done already"
  for every stage, rewrote compare_config.json and reported the old models."""
  import shutil

  from conftest import QUICK

  from ptmjax import cli

  workdir = tmp_path / 'qs'
  shutil.copytree(quickstart_dir, workdir)
  before = (workdir / 'compare_config.json').read_text()
  code = cli.main(['quickstart', '--workdir', str(workdir), *QUICK,
                   '--config.single.optim.lr=0.5'])  # fmt: skip
  err = capsys.readouterr().err
  assert code == 2 and 'other settings (' in err and 'optim.lr: ' in err and 'Traceback' not in err
  assert (workdir / 'compare_config.json').read_text() == before


@pytest.mark.slow  # a whole shrunk study (3 to 4 minutes on 2 cores)
def test_the_joint_arm_trains_on_both_datasets_and_is_reported_against_single(tmp_path):
  """Issue 25's joint arm: YAAM-like and ptmDB-like data in one stage from the initial
  weights, evaluated on the target, in the report's arms and paired differences."""
  joint = [f'--config.joint.{k}' for k in ('optim.total_steps=4', 'optim.warmup_steps=1',
                                          'eval.every_steps=2', 'log_every_steps=2')]  # fmt: skip
  args = ['compare', '--config', 'compare:quickstart', '--workdir', str(tmp_path), *QUICK,
          *joint, "--config.arms=('single','two','joint')"]  # fmt: skip
  assert cli.main(args) == 0
  info = json.loads((tmp_path / 'seed0' / 'joint' / 'run_info.json').read_text())
  # (Synthetic data: the joint stage generates its source part at its own size, 500.)
  assert info['data']['sources'] == {'synthetic/target:train': 400, 'synthetic/source:train': 400}
  assert info['data']['main_repeat'] == 2 and info['data']['proteins'] == 2 * 400 + 400
  results = json.loads((tmp_path / 'report' / 'results.json').read_text())
  phos = results['results']['phosphorylation']['views']['pooled']
  assert {'single', 'two', 'joint'} <= set(phos['arms']) and 'two_nolys' not in phos['arms']
  assert {'joint-single', 'joint-two', 'joint-logreg'} <= set(phos['differences'])
  assert 'joint (YAAM and ptmDB in one stage)' in (tmp_path / 'report' / 'report.md').read_text()
