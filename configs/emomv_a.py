"""EMVGAN on EmoMV-A (human-labelled MVED segments; classification is reported on its test split).

Run:
  python -m emvgan_jax.main --config=configs/emomv_a.py --workdir=runs/emomv_a
Needs EmoMV-A's SlowFast train/val/retrieval files (downloaded by default; absent from some local copies).
"""

from emvgan_jax import config_lib


def get_config():
  config = config_lib.base_config()
  config.data.dataset = "emomv/a"
  return config
