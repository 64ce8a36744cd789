r"""Stage 0: masked-LM pretraining from scratch on yeast + ptmDB sequences.

Needed here because no pretrained weights can be downloaded; a user with ESM-2 or
ProtBert runs `ptmjax convert-hf` instead and starts stage 1 from that folder.

    ptmjax train --config pretrain:small --workdir runs/stage0 \
      --config.data.data_dir=tfds_data

Sequences: YAAM train + the unlabeled rest of the S288C proteome + ptmDB train,
less every protein homologous to a YAAM validation or test protein (so no
evaluation sequence, nor a close relative, is seen even without labels).
BERT masking (15 %: 80 % <mask>, 10 % random residue, 10 % kept). Evaluation
is off (there are no PTM heads to score yet); the loss is in metrics.jsonl.

tiny: ~1 min on 2 CPU cores. small: 1,200 steps; measured 11.8 min on 2 CPU
cores (shared with another job), MLM loss 3.32 at step 20 and 2.67 at step 1,200
(a uniform guess over 20 residues is ln 20 = 3.00). full: GPU/TPU.
"""

import ml_collections

from ptmjax.configs import yaam


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = yaam.get_config(arg)
  c.data.train_split = 'train+unlabeled'
  c.data.extra = ('ptmdb/all:train',)
  c.data.exclude_homologs_of = 'yaam:validation+test'
  c.data.candidates = ''  # no PTM heads are trained
  c.loss.update(ptm_weight=0.0, mlm_weight=1.0)
  c.eval.every_steps = 0
  c.checkpoint.best_metric = ''
  c.optim.total_steps *= 2
  c.optim.warmup_steps *= 2
  return c
