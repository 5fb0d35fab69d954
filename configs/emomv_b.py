"""EMVGAN on EmoMV-B.

Run:
  python -m emvgan_jax.main --config=configs/emomv_b.py --workdir=runs/emomv_b
Needs SlowFast_DS2_TRAIN_MATCH_MISMATCH.h5 (downloaded by default; absent from ../shared/emomv, so
`--config.data.manual_dir=../shared/emomv` fails with a missing-file error naming it and its URL).
"""

from emvgan_jax import config_lib


def get_config():
  config = config_lib.base_config()
  config.data.dataset = "emomv/b"
  return config
