r"""Hyper-parameter search for the YAAM per-residue fine-tune.

    ptmjax sweep --config sweep:small --workdir runs/sweep \
      --config.train.data.data_dir=tfds_data

Every trial is a `ptmjax train` run of `train` (the `yaam` config at the
chosen size) with the sampled values, in WORKDIR/trial_NNN. Re-running the same
command resumes: finished trials are skipped, an interrupted one resumes from its
checkpoint, and `--config.trials` can be raised to add trials (the random plan is
a prefix-stable sequence for a given `seed`). Results: WORKDIR/results.{md,json}
and sweep.png, sorted by `metric` (validation; the chosen setting still needs a
test-set run, e.g. via `ptmjax compare`).

Search space (`space`): one entry per hyper-parameter, '' to leave it alone.
  'a,b,c'           one of these values (random: uniform; grid: all of them)
  'log:LO:HI'       log-uniform in [LO, HI] (random search only)
  'uniform:LO:HI'   uniform in [LO, HI] (random search only)
Keys: lr, batch_size, weight_decay, label_smoothing, pos_weight, warmup_steps, or
any train-config path with '__' for '.', e.g. `optim__grad_clip_norm`.

Sizes: `tiny` (CI: 2 trials of 4 steps), `small` (12 random trials of the tiny
YAAM model, 300 steps each; about 15 min on 2 CPU cores), `full` (GPU/TPU: 24
random trials of the full model).
"""

import ml_collections

from ptmjax.configs import yaam


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  size = arg or 'small'
  c = ml_collections.ConfigDict()
  c.size = size
  c.method = 'random'  # or 'grid' (every combination of the listed values)
  c.trials = 12  # random: how many; grid: at most this many (0 = all)
  c.seed = 0  # of the sampler; every trial trains with train.seed
  c.metric = 'val/phosphorylation/auprc'  # sorted by, larger is better
  c.space = ml_collections.ConfigDict(
    dict(
      lr='log:3e-4:5e-3',
      batch_size='8,16,32',
      weight_decay='log:1e-4:1e-1',
      label_smoothing='0,0.05,0.1',
      pos_weight='auto,1,5',
      warmup_steps='0,30,100',
    )
  )
  c.train = yaam.get_config('tiny' if size in ('tiny', 'small') else 'full')
  c.train.progress = False
  if size == 'tiny':
    c.trials = 2
    c.train.optim.update(total_steps=4, warmup_steps=1)
    c.train.eval.update(every_steps=4, max_proteins=10)
    c.train.data.max_len = 128
    c.train.log_every_steps = 2
    c.space.warmup_steps = '0,1'
  elif size == 'full':
    c.trials = 24
    c.space.lr = 'log:2e-5:5e-4'
    c.space.warmup_steps = '200,500,1000'
  elif size != 'small':
    raise ValueError(f'unknown size {size!r}: use tiny, small or full')
  return c
