"""A tiny EMVGAN (or, with the argument `baseline`, a tiny EmoMV retrieval baseline) on the builder's dummy data:
the same code paths as a real run in a few seconds on CPU. Used by the tests.

Run:
  python -m emvgan_jax.main --config=configs/tiny.py --workdir=/tmp/emvgan_tiny
The dummy dataset is built into its own TFDS data dir (never the default one, where it would shadow the real
EmoMV-C).
"""

import os
import tempfile

from emvgan_jax import config_lib

DUMMY_DATA = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tfds_emomv", "emomv", "dummy_data"
)


def get_config(arg: str = "emvgan"):
  from tfds_emomv.emomv import make_dummy_data  # pylint: disable=g-import-not-at-top

  make_dummy_data.ensure_dummy_data()  # its feature files are written by a script, not committed
  config = config_lib.base_config()
  config.data.manual_dir = DUMMY_DATA
  config.data.data_dir = os.path.join(tempfile.gettempdir(), "emvgan_jax_dummy_tfds")
  if arg == "baseline":
    config.model = "baseline"
    config.baseline.hidden = 8
    config.baseline.cbp_dim = 4
    # As configs/emomv_baseline.py: early stopping on the validation loss.
    config.train.selection_metric, config.train.selection_mode = "pairs/loss", "min"
    config.data.selection_fraction = 0.0
    config.loss.w_va = 0.0
  elif arg != "emvgan":
    raise ValueError(f"configs/tiny.py takes 'emvgan' or 'baseline', got {arg!r}")
  config.emvgan.hidden = 16
  config.emvgan.embed_dim = 8
  config.emvgan.disc_hidden = 16
  config.train.batch_size = 8
  config.train.num_epochs = 4
  config.train.patience = 0
  config.train.checkpoint_every_epochs = 2
  config.train.log_every_steps = 1
  config.train.eval_batch_size = 16
  config.train.progress_bar = False
  config.train.plots = False  # the tests that check plots turn them on
  return config
