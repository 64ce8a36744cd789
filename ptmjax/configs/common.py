"""What every training config shares: the base settings and the sizes.

Each dataset config (`yaam`, `ptmdb`, `pretrain`, `synthetic`) is a short delta
on `base()`, then `resize(c, size)`. Section order: seed, data, model, loss,
optim, sharding, checkpoint, eval.
"""

import ml_collections

from ptmjax import sharding as shd


def base() -> ml_collections.ConfigDict:
  """Every training setting, with the defaults a dataset config then changes."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.progress = True
  c.log_every_steps = 25

  c.data = ml_collections.ConfigDict()
  c.data.name = ''  # set by each dataset config: 'yaam', 'ptmdb', 'synthetic'
  c.data.data_dir = 'tfds_data'
  c.data.config = ''
  c.data.train_split = 'train'
  c.data.eval_split = 'validation'
  c.data.batch_size = 16
  c.data.max_len = 512
  c.data.mode = 'pack'  # or 'bucket'
  c.data.max_segments = 8
  # Proteins longer than max_len: 'random' = one random window per epoch; 'tile' = pieces
  # covering every residue each epoch (cut points shift per epoch); 'start'.
  c.data.crop = 'random'
  c.data.exclude_taxa = ()  # e.g. (559292, 4932): drop S. cerevisiae proteins (stage 1)
  # < 1: a fixed subset of the training proteins, by whole homology clusters (nested:
  # the 10 % subset is inside the 25 % one); `fraction_seed` picks the cluster order.
  c.data.train_fraction = 1.0
  c.data.fraction_seed = 0
  # 'auto': derived from the training labels; or e.g. 'phosphorylation=STY,acetylation=K'
  c.data.candidates = 'auto'
  c.data.extra = ()  # more training data: ('ptmdb/all:train', 'yaam:unlabeled', ...)
  c.data.extra_exclude_taxa = ()  # taxa dropped from `extra` only (a joint run's ptmDB part)
  c.data.main_repeat = 1  # the main dataset k times per epoch: a joint run's mixing ratio
  c.data.exclude_homologs_of = ''  # e.g. 'yaam:validation+test': drop their homologs from training

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
  # Per-channel loss weights, e.g. 'phosphorylation=2,acetylation=0.5' (others 1).
  c.loss.channel_weights = ''
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

  # LoRA (`ptmjax.models.lora`): rank 0 = off. Adapters on the dense layers whose path
  # fully matches `targets`; only they and `train` (regexes) are optimised.
  c.lora = ml_collections.ConfigDict()
  c.lora.rank = 0
  c.lora.alpha = 16.0  # the update is scaled by alpha / rank
  c.lora.targets = (r'encoder/layers/\d+/attention/(query|key|value|out)',)
  c.lora.train = (r'ptm_head/.*', r'count_head/.*')

  c.sharding = ml_collections.ConfigDict()
  c.sharding.mesh = {'data': -1, 'fsdp': 1, 'tensor': 1}
  c.sharding.rules = shd.DEFAULT_RULES
  c.sharding.num_devices = 0  # 0 = all; N = the first N (tests)

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 200
  c.checkpoint.keep_best = 2
  c.checkpoint.best_metric = 'val/phosphorylation/auroc'
  # What `final/` holds: 'last' (the last step) or 'best' (the best evaluation by
  # best_metric: what the next stage and predict then use).
  c.checkpoint.final = 'last'

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 500
  c.eval.max_proteins = 0  # 0 = the whole split
  # Stop after this many evaluations without a new best best_metric (0 = never).
  c.eval.patience = 0
  c.eval.min_steps = 0  # patience never stops a run before this step

  return c


SIZES = ('tiny', 'small', 'full')
FAMILIES = ('transformer', 'proteinbert')
# ProteinBERT encoders per size; `full` is the published model's shape (16 M parameters).
PROTEINBERT_SIZES = {
  'tiny': dict(embed_dim=32, global_dim=64, num_layers=2, num_heads=4, key_dim=16, head_dim=32),
  'small': dict(embed_dim=64, global_dim=256, num_layers=4, num_heads=4, key_dim=32, head_dim=64),
  'full': dict(embed_dim=128, global_dim=512, num_layers=6, num_heads=4, key_dim=64, head_dim=128),
}


def resize(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """The model and run sizes every experiment config shares.

  tiny: seconds to a minute on CPU (tests, smoke runs); small: the 2-CPU-core
  comparison (about an hour for every arm and seed); full: a GPU or TPU with an
  ESM-2-35M-sized encoder (or an imported checkpoint via init_from) and 1,024 tokens.
  `SIZE-proteinbert` (e.g. `yaam:tiny-proteinbert`) swaps in a ProteinBERT encoder
  of that size, run the same way (`use_proteinbert`).
  """
  arg = arg or 'small'
  arg, _, family = arg.partition('-')
  if family not in ('', *FAMILIES):
    raise ValueError(f'unknown model family {family!r} in the config arg: use one of {FAMILIES}')
  if arg == 'tiny':
    c.model.update(
      num_layers=2, embed_dim=64, num_heads=4, mlp_dim=256, head_dim=32, dropout_rate=0.0
    )
    c.data.update(batch_size=8, max_len=256)
    c.optim.update(total_steps=300, warmup_steps=30, lr=2e-3)
    c.eval.update(every_steps=150, max_proteins=200)
    c.checkpoint.every_steps = 100
    c.log_every_steps = 10
  elif arg == 'small':
    c.model.update(
      num_layers=3, embed_dim=96, num_heads=4, mlp_dim=384, head_dim=64, dropout_rate=0.0
    )
    c.data.update(batch_size=16, max_len=256)
    c.optim.update(total_steps=600, warmup_steps=60, lr=2e-3)
    c.eval.update(every_steps=200, max_proteins=200)
    c.checkpoint.every_steps = 200
    c.log_every_steps = 20
  elif arg == 'full':
    # ESM-2-35M-sized; bf16 compute, fp32 params. On a GPU/TPU, ~1 h per stage.
    c.model.update(
      num_layers=12, embed_dim=480, num_heads=20, mlp_dim=1920, head_dim=128, dtype='bfloat16'
    )
    c.data.update(batch_size=32, max_len=1024)
    c.optim.update(total_steps=10_000, warmup_steps=500, lr=1e-4, layer_decay=0.9)
    c.eval.update(every_steps=1000, max_proteins=0)
    c.checkpoint.every_steps = 1000
    c.log_every_steps = 50
  else:
    raise ValueError(f'unknown config arg {arg!r}: use one of {SIZES}')
  # The transformer is the base config; another family rewrites its model section.
  family_setup = {'proteinbert': use_proteinbert}
  if family in family_setup:
    family_setup[family](c, arg)
  return c


def use_proteinbert(c: ml_collections.ConfigDict, size: str) -> None:
  """A ProteinBERT encoder (ptmjax.models.proteinbert) of `size` instead of the transformer.

  Its vocabulary and special ids come from the `proteinbert` tokenizer (the trainer
  fills them in); it runs whole proteins at inference (`max_len` has no table to
  outgrow) and trains on the same packed crops; pretraining replaces 5 % of the
  tokens, as the original does.
  """
  m = c.model
  c.model = ml_collections.ConfigDict(
    dict(
      tokenizer='proteinbert',
      family='proteinbert',
      padding='masked',
      num_annotations=0,
      layer_norm_eps=1e-3,
      token_dropout=False,
      max_len=1 << 20,
      conv_kernel=9,
      wide_dilation=5,
      ptm_head=m.ptm_head,
      dtype=m.dtype,
      dropout_rate=0.0,
      **PROTEINBERT_SIZES[size],
    )
  )
  c.loss.mlm_prob = 0.05
