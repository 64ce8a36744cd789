"""TFDS dataset builders of ptmjax; importing this package registers them.

import data_builders, tensorflow_datasets as tfds
builder = tfds.builder('yaam', data_dir=DATA_DIR)
builder.download_and_prepare(file_format='array_record',
    download_config=tfds.download.DownloadConfig(manual_dir=MANUAL_DIR))
source = builder.as_data_source()   # no TensorFlow needed
"""

from data_builders.ptmdb import ptmdb_dataset_builder  # noqa: F401
from data_builders.yaam import yaam_dataset_builder  # noqa: F401
