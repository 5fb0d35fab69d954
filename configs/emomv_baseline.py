"""The four EmoMV benchmark models, exactly as published (Thao, Herremans, Roig 2023).

The config argument is `<dataset>,<variant>`, variant one of retrieval_single, retrieval_multi,
classification_single, classification_multi. Run, for example:
  python -m emvgan_jax.main --config=configs/emomv_baseline.py:c,retrieval_multi --workdir=runs/base_c_rm \
      --config.data.manual_dir=$EMOMV_DIR
Training follows the published code: Adam lr 1e-4 with coupled L2 weight decay 0.1, batch 256 (every row every
epoch), early stopping on the validation loss with patience 20, at most 1000 epochs, best checkpoint restored.
"""

from emvgan_jax import config_lib

VARIANTS = {
  "retrieval_single": ("retrieval", False),
  "retrieval_multi": ("retrieval", True),
  "classification_single": ("classification", False),
  "classification_multi": ("classification", True),
}


def get_config(arg: str = "c,retrieval_single"):
  try:
    dataset, variant = arg.split(",")
    task, multitask = VARIANTS[variant]
  except (ValueError, KeyError):
    raise ValueError(
      f"configs/emomv_baseline.py takes '<a|b|c>,<variant>' with variant in {sorted(VARIANTS)}, got {arg!r}"
    ) from None
  if dataset not in ("a", "b", "c"):
    raise ValueError(f"configs/emomv_baseline.py: dataset must be a, b or c, got {dataset!r}")
  config = config_lib.base_config()
  config.model = "baseline"
  config.data.dataset = f"emomv/{dataset}"
  config.baseline.task = task
  config.baseline.multitask = multitask
  config.optim.learning_rate = 1e-4
  config.optim.weight_decay = 0.1
  config.train.batch_size = 256
  config.train.drop_remainder = False
  config.train.num_epochs = 1000
  config.train.patience = 20
  config.train.selection_metric = "pairs/loss"
  config.train.selection_mode = "min"
  config.data.selection_fraction = 0.0  # the published protocol: early stopping on validation
  config.loss.w_va = 0.0
  return config
