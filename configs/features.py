"""EMVGAN on any folder in EmoMV's layout: EmoMV's own, one written by `python -m tfds_emomv.synthetic`, or your
own features (docs/data.md, "Your own features").

Run (from the repository root):
  python -m emvgan_jax.main --config=configs/features.py --workdir=W --config.data.manual_dir=DIR
The folder's features are built once into array_record shards (`python -m tfds_emomv.features`; widths read from
its HDF5 files) under data.data_dir (default ~/tensorflow_datasets). Splits of more than data.stream_above_mb MB
of features stay on disk and are read a batch at a time, so the train split may be larger than memory. A folder
holding several of EmoMV's dataset folders needs --config.data.layout=a|b|c.

The model and losses are EmoMV-C's defaults (configs/emomv_c.py); what differs is sized for large folders: a
global batch of 1,024 (at EmoMV's size, 256), an evaluation every 2,000 steps rather than every epoch, and
retrieval galleries cut to a seeded sample of 4,096 items (retrieval metrics rank every item for every query).
"""

from emvgan_jax import config_lib


def get_config():
  config = config_lib.base_config()
  config.data.dataset = "features"
  config.train.batch_size = 1024
  config.train.eval_batch_size = 1024
  config.train.eval_every_steps = 2000
  config.data.max_gallery_items = 4096
  return config
