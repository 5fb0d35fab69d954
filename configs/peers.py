"""The simple peers of EMVGAN (emvgan_jax/evaluation/peers.py), fitted with scikit-learn on EmoMV-C's train split.

The config argument is the peer, `logreg`, `knn` or `cca`, optionally followed by `,<a|b|c>`. Run, for example:
  python -m emvgan_jax.main --config=configs/peers.py:logreg --workdir=runs/peer_logreg \
      --config.data.manual_dir=$EMOMV_DIR
Its hyper-parameter is chosen on three grouped holdouts of train (never on validation); it ends, like a
training run, with workdir/results.json and the results table.
"""

from emvgan_jax import config_lib

KINDS = ("logreg", "knn", "cca")


def get_config(arg: str = "logreg"):
  kind, _, dataset = arg.partition(",")
  if kind not in KINDS or dataset not in ("", "a", "b", "c"):
    raise ValueError(f"configs/peers.py takes '<{'|'.join(KINDS)}>[,<a|b|c>]', got {arg!r}")
  config = config_lib.base_config()
  config.model = "peer"
  config.peer.kind = kind
  config.data.dataset = f"emomv/{dataset or 'c'}"
  config.train.plots = False
  config.data.selection_fraction = 0.0  # a peer selects on its own holdouts of train
  return config
