r"""Fine-tune on YAAM (yeast) per residue: the single-stage arm, and stage 2 of the two-stage one.

Build the data first (`ptmjax data build yaam --manual-dir ../shared/data
--data-dir tfds_data`), then:

    ptmjax train --config yaam:tiny --workdir runs/yaam_tiny

`tiny`: a 2-layer, width-64 encoder trained from scratch for 300 steps of 8
proteins of up to 256 tokens; about 70 s on 2 CPU cores. Measured: validation
(first 200 proteins) phosphorylation AUROC on S/T/Y 0.78 at step 300.

`small` (the default): 3 layers, width 96, 600 steps of 16 x 256 tokens; a few
minutes on 2 CPU cores. `full`: ESM-2-35M-sized, 1,024 tokens, bf16, for a GPU/TPU.
A GPU user fine-tunes an imported ESM-2 instead: `ptmjax convert-hf --model
facebook/esm2_t12_35M_UR50D --out models/esm2_35m`, then
`--config.init_from.path=models/esm2_35m`.
"""

import ml_collections

from ptmjax.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.base()
  c.data.name = 'yaam'
  return common.resize(c, arg)
