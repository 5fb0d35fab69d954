"""EMVGAN on EmoMV-C (the default experiment).

Run (from the repository root):
  python -m emvgan_jax.main --config=configs/emomv_c.py --workdir=runs/emomv_c \
      --config.data.manual_dir=$EMOMV_DIR
It trains with early stopping on a held-out part of train (never on validation), keeps the latest and best
checkpoints in runs/emomv_c/checkpoints, and ends by writing runs/emomv_c/results.json and printing the results
table (on validation) with chance beside each number.
"""

from emvgan_jax import config_lib


def get_config():
  return config_lib.base_config()
