"""Data: PTM-type vocabulary, tokenizers, datasets (TFDS builders, sources), candidates, pipeline.

Importing this package does not import TensorFlow Datasets: `build` and `load`
do, and register the `yaam` and `ptmdb` builders (`ptmjax.data.builders`) then.
"""

from ptmjax.data.ptm_types import NUM_TYPES, PTM_NAMES, PTM_TYPES
from ptmjax.data.sources import build, load

__all__ = ['build', 'load', 'NUM_TYPES', 'PTM_NAMES', 'PTM_TYPES']
