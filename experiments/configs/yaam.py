r"""Fine-tune on YAAM (yeast) per residue: the single-stage arm, and stage 2 of the two-stage one.

Build the data first (`ptmjax data build yaam --manual-dir ../shared/data
--data-dir tfds_data`), then:

    ptmjax train --config experiments/configs/yaam.py:tiny --workdir runs/yaam_tiny

`tiny`: a 2-layer, width-64 encoder trained from scratch for 300 steps of 8
proteins of up to 256 tokens; about 70 s on 2 CPU cores. Measured: validation
(first 200 proteins) phosphorylation AUROC on S/T/Y 0.78 at step 300.

`small` (default arg None): 4 layers, width 128, 2,000 steps; CPU-hour scale.
A GPU user fine-tunes an imported ESM-2 instead: `ptmjax convert-hf --model
facebook/esm2_t12_35M_UR50D --out models/esm2_35m`, then
`--config.init_from.path=models/esm2_35m`.
"""

import ml_collections

from ptmjax import sharding as shd


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.progress = True
  c.log_every_steps = 25

  c.data = ml_collections.ConfigDict()
  c.data.name = 'yaam'
  c.data.data_dir = 'tfds_data'
  c.data.config = ''
  c.data.train_split = 'train'
  c.data.eval_split = 'validation'
  c.data.batch_size = 16
  c.data.max_len = 512
  c.data.mode = 'pack'  # or 'bucket'
  c.data.max_segments = 8
  c.data.candidates = 'auto'  # derived from the training labels; or a {channel: 'STY'} dict

  c.model = ml_collections.ConfigDict(
    dict(
      tokenizer='esm',
      vocab_size=33,
      num_layers=4,
      embed_dim=128,
      num_heads=8,
      mlp_dim=512,
      max_len=1026,
      dropout_rate=0.1,
      ptm_head='mlp',
      head_dim=64,
      dtype='float32',
    )
  )
  c.init_from = ml_collections.ConfigDict(dict(path='', skip=('ptm_head/.*', 'count_head/.*')))

  c.loss = ml_collections.ConfigDict()
  c.loss.channels = ()  # () = every channel with labels
  c.loss.ptm_weight = 1.0
  c.loss.pos_weight = 'auto'  # negatives / positives per channel, capped
  c.loss.max_pos_weight = 20.0
  c.loss.label_smoothing = 0.05
  c.loss.focal_gamma = 0.0
  c.loss.count_weight = 0.0
  c.loss.mlm_weight = 0.0
  c.loss.mlm_prob = 0.15

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-3
  c.optim.total_steps = 2000
  c.optim.warmup_steps = 100
  c.optim.decay = 'cosine'
  c.optim.end_lr_ratio = 0.0
  c.optim.weight_decay = 0.01
  c.optim.grad_clip_norm = 1.0
  c.optim.grad_accum_steps = 1
  c.optim.layer_decay = 1.0
  c.optim.freeze = ()
  c.optim.freeze_steps = 0

  c.sharding = ml_collections.ConfigDict()
  c.sharding.mesh = {'data': -1, 'fsdp': 1, 'tensor': 1}
  c.sharding.rules = shd.DEFAULT_RULES
  c.sharding.num_devices = 0  # 0 = all; N = the first N (tests)

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 200
  c.checkpoint.keep_best = 2
  c.checkpoint.best_metric = 'val/phosphorylation/auroc'

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 500
  c.eval.max_proteins = 0  # 0 = the whole split

  if arg == 'tiny':
    c.model.update(
      num_layers=2, embed_dim=64, num_heads=4, mlp_dim=256, head_dim=32, dropout_rate=0.0
    )
    c.data.update(batch_size=8, max_len=256)
    c.optim.update(total_steps=300, warmup_steps=30, lr=2e-3)
    c.eval.update(every_steps=150, max_proteins=200)
    c.checkpoint.every_steps = 100
    c.log_every_steps = 10
  elif arg is not None:
    raise ValueError(f"unknown config arg {arg!r}: use 'tiny' or nothing")
  return c
