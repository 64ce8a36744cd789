r"""The shipped yeast model (`ptmjax/shipped/yeast-proteinbert-small`): the stage
comparison's single-stage arm (`compare:small-proteinbert`, `single`, seed 0, the base
recipe its validation chose), started from the study's stage-0 pretraining.

    ptmjax train --config shipped:/path/to/stage0/final --workdir runs/shipped \
      --config.data.data_dir=tfds_data
    python -m ptmjax.studies.ship --run runs/shipped --data-dir tfds_data

The argument is the stage-0 model folder (`WORKDIR/stage0/final` of the study). Why this
recipe: over the study's seeds the arms are within seed noise on validation mean AUROC
(results/compare_small_proteinbert), so the simplest one ships.
"""

from ptmjax.configs import compare


def get_config(arg: str | None = None):
  study = compare.get_config('small-proteinbert')
  c = study.single
  c.checkpoint.best_metric = study.select_metric  # as the study selects
  c.seed = 0
  c.init_from.path = arg or ''
  c.progress = True
  return c
