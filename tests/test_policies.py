"""The training loop's policies and the work-dir format, each without a model: when to
log / evaluate / save, the best step and patience, the log window, the RunDir."""

import json

import numpy as np
import pytest

from ptmjax.errors import WorkdirError
from ptmjax.run_dir import MODEL_FILE, RunDir
from ptmjax.training.policies import BestTracker, LogWindow, itstime


def test_itstime_every_n_steps_and_the_last():
  assert [s for s in range(1, 11) if itstime(s, 4, 10)] == [4, 8, 10]
  assert [s for s in range(1, 11) if itstime(s, 4, 10, last=False)] == [4, 8]
  assert [s for s in range(1, 11) if itstime(s, 0, 10)] == [10]  # never, but the last
  assert not any(itstime(s, 0, 10, last=False) for s in range(1, 11))


def test_best_tracker_keeps_the_best_and_counts_patience_from_min_steps():
  t = BestTracker('auroc', patience=2, min_steps=30)
  assert t.update(10, {'auroc': 0.6, 'f1': 0.1}, {'p': 0.5})
  assert not t.update(20, {'auroc': 0.5}, {'p': 0.4})
  assert not t.update(25, {'auroc': 0.6}, {})  # equal is not better
  assert (t.best, t.best_step, t.bad) == (0.6, 10, 2)
  assert t.metrics == {'auroc': 0.6, 'f1': 0.1} and t.thresholds == {'p': 0.5}
  assert not t.should_stop(25)  # patience spent, but before min_steps
  assert t.should_stop(30)
  assert t.update(40, {'auroc': 0.7}, {})
  assert t.bad == 0 and not t.should_stop(40)
  assert not BestTracker('auroc').should_stop(10**6)  # patience 0: never stops


def test_best_tracker_state_round_trips_through_checkpoint_json():
  t = BestTracker('auroc', patience=3)
  t.update(5, {'auroc': np.float32(0.8)}, {'p': np.float64(0.3)})
  t.update(10, {'auroc': 0.1}, {})
  state = json.loads(json.dumps(t.state()))  # what the checkpoint's data item stores
  # The keys interrupted work dirs of earlier versions saved, so they resume.
  assert set(state) == {'best', 'best_step', 'bad', 'metrics', 'thresholds'}
  back = BestTracker('auroc', patience=3)
  back.load(state)
  assert back == t
  back.load({})  # a checkpoint from before patience: nothing to restore
  assert back == t


def test_best_tracker_ignores_evaluations_without_its_metric():
  t = BestTracker('val/x/auroc')
  assert not t.update(2, {'val/y/auroc': 0.9}, {})
  assert t.best is None and t.bad == 1


def test_log_window_means_the_losses_and_counts_real_tokens():
  w = LogWindow()
  batch = {'tokens': np.zeros((2, 4)), 'segment_ids': np.array([[1, 1, 0, 0], [1, 2, 2, 0]])}
  w.add(batch, 1.0, 10)
  w.add(batch, 3.0, 10)
  row = w.summary()
  assert row['loss'] == 2.0
  assert row['real_token_share'] == 10 / 16
  assert row['residues_per_s'] > 0
  assert w.losses == [] and w.tokens == 0  # a new window


def test_run_dir_knows_finished_and_resumable(tmp_path):
  rd = RunDir.at(tmp_path)
  assert not rd.is_finished() and not rd.has_checkpoints()
  (rd.checkpoints / 'latest' / '4').mkdir(parents=True)
  assert rd.has_checkpoints()
  rd.final.mkdir()
  assert not rd.is_finished()  # a final/ being written is not a finished run
  (rd.final / MODEL_FILE).write_text('{}')
  assert rd.is_finished()
  assert RunDir.of_model(rd.final) == rd


def test_run_dir_reads_config_run_info_and_metrics(tmp_path):
  rd = RunDir(tmp_path)
  assert rd.read_config() is None and rd.metric_rows() == []
  with pytest.raises(FileNotFoundError, match='not a training work dir'):
    rd.read_run_info()
  rd.write_json(rd.config, {'optim': {'total_steps': 7}})
  rd.write_json(rd.run_info, {'channels': ['phosphorylation']})
  rd.metrics.write_text('{"step": 1, "loss": 2}\n\n{"step": 2, "loss": 1}\n')
  assert rd.step_cap() == 7
  assert rd.read_run_info() == {'channels': ['phosphorylation']}
  assert [r['step'] for r in rd.metric_rows()] == [1, 2]


def test_drop_rows_after_keeps_the_rows_up_to_the_resumed_step(tmp_path):
  rd = RunDir(tmp_path)
  rd.metrics.write_text(''.join(json.dumps({'step': s}) + '\n' for s in (0, 2, 4, 6)))
  rd.drop_rows_after(4)
  assert [r['step'] for r in rd.metric_rows()] == [0, 2, 4]
  RunDir(tmp_path / 'none').drop_rows_after(4)  # no metrics yet: nothing to do


def test_run_dir_lock_refuses_a_second_holder_and_frees_on_exit(tmp_path):
  rd = RunDir(tmp_path)
  with rd.lock():
    with pytest.raises(WorkdirError, match=r'in use by process \d+ on '):
      with RunDir(tmp_path).lock():
        pass
  with rd.lock():  # free again
    pass
  with rd.lock(is_main=False), rd.lock(is_main=False):  # other processes never lock
    pass


def test_move_aside_renames_and_never_deletes(tmp_path):
  rd = RunDir(tmp_path / 'run')
  assert rd.move_aside() is None
  rd.root.mkdir()
  (rd.root / 'x').write_text('kept')
  moved = rd.move_aside()
  assert not rd.root.exists() and (moved / 'x').read_text() == 'kept'
  assert moved.name.startswith('run.replaced-')
