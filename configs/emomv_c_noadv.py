"""Ablation: EMVGAN on EmoMV-C without the adversarial term (w_adv = 0; the discriminator still trains and is
logged, but the generators ignore it).

Run:
  python -m emvgan_jax.main --config=configs/emomv_c_noadv.py --workdir=runs/emomv_c_noadv \
      --config.data.manual_dir=$EMOMV_DIR
"""

from emvgan_jax import config_lib


def get_config():
  config = config_lib.base_config()
  config.loss.w_adv = 0.0
  return config
