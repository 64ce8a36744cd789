r"""Stage 1: fine-tune per residue on multi-organism ptmDB (every channel, unknowns masked).

    ptmjax train --config ptmdb:small --workdir runs/stage1 \
      --config.data.data_dir=tfds_data --config.init_from.path=runs/stage0/final

Build first: `ptmjax data build ptmdb --config all --manual-dir
../shared/data/multiorganism --data-dir tfds_data`. Every ptmDB training protein
homologous to a YAAM validation or test protein is removed (MMseqs2, 30 %
identity, 80 % coverage; run_info.json says how many: 398 of 7,400 on the shared
files). Stage 2 then starts from `runs/stage1/final` with the `yaam` config.

tiny: ~1.5 min on 2 CPU cores; small: ~5 min; full: GPU/TPU.
"""

import ml_collections

from ptmjax.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.base()
  c.data.name = 'ptmdb'
  c.data.config = 'all'
  c.data.exclude_homologs_of = 'yaam:validation+test'
  c = common.resize(c, arg)
  c.optim.total_steps = int(c.optim.total_steps * 4 // 3)
  return c
