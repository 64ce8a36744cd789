"""Data: PTM-type vocabulary, raw-format parsers, homology splits and datasets."""

from ptmjax.data.dataset import build, load
from ptmjax.data.ptm_types import NUM_TYPES, PTM_NAMES, PTM_TYPES

__all__ = ['build', 'load', 'NUM_TYPES', 'PTM_NAMES', 'PTM_TYPES']

# Registers the `yaam` and `ptmdb` TFDS builders, so that after `import
# ptmjax.data` a plain `tfds.builder('yaam', data_dir=...)` finds them.
import data_builders  # noqa: E402, F401
