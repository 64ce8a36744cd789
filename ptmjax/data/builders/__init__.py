"""The TFDS builders of ptmjax (`yaam`, `ptmdb`); importing this package registers them.

Each builder's folder holds its raw-format parser (`parse.py`), README,
citations and dummy data. `ptmjax.data.build` / `load` import this package
when they need it; to use TFDS directly:

    import ptmjax.data.builders  # registers the builders
    import tensorflow_datasets as tfds
    source = tfds.builder('yaam', data_dir=DATA_DIR).as_data_source()  # no TensorFlow
"""

from ptmjax.data.builders.ptmdb import ptmdb_dataset_builder  # noqa: F401
from ptmjax.data.builders.yaam import yaam_dataset_builder  # noqa: F401
