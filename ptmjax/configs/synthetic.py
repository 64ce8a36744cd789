r"""Train on the synthetic dataset generated in code (no files): tests and smoke runs.

    ptmjax train --config synthetic --workdir runs/synthetic

About 30 s on 2 CPU cores. Measured: validation phosphorylation AUROC on S/T/Y
0.59 after 200 steps from scratch; the planted S-P and R-x-x-S rules (see
ptmjax.data.synthetic) need a longer or better-tuned run, which the quickstart
will set. `:test` shrinks everything to seconds for the trainer tests.
"""

import ml_collections

from ptmjax.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.resize(common.base(), 'tiny')
  c.data.name = 'synthetic'
  c.data.synthetic = ml_collections.ConfigDict(dict(num_proteins=400, seed=0, variant='target'))
  c.eval.update(every_steps=100, max_proteins=40)
  c.optim.update(total_steps=200, warmup_steps=20)
  c.checkpoint.best_metric = 'val/phosphorylation/auroc'
  if arg == 'test':  # seconds: for the trainer tests
    c.data.synthetic.num_proteins = 60
    c.model.update(num_layers=1, embed_dim=32, num_heads=4, mlp_dim=64, head_dim=16)
    c.data.update(batch_size=8, max_len=128)
    c.optim.update(total_steps=6, warmup_steps=2)
    c.eval.update(every_steps=0)
    c.checkpoint.every_steps = 1000
    c.log_every_steps = 1
    c.progress = False
  elif arg is not None:
    raise ValueError(f"unknown config arg {arg!r}: use 'test' or nothing")
  return c
