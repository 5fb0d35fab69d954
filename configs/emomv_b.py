"""EMVGAN on EmoMV-B.

Run:
  python -m emvgan_jax.main --config=configs/emomv_b.py --workdir=runs/emomv_b
Needs SlowFast_DS2_TRAIN_MATCH_MISMATCH.h5, which is downloaded by default; a local copy without it
(`--config.data.manual_dir=$EMOMV_DIR`) fails with a missing-file error naming it and its URL.
"""

from emvgan_jax import config_lib


def get_config():
  config = config_lib.base_config()
  config.data.dataset = "emomv/b"
  return config
