"""Host memory of loading a run's data, or of a short training run, in a fresh process per figure.

  python -m tfds_emomv.synthetic --out_dir=/tmp/syn100k --num_pairs=100000
  python -m benchmarks.memory --data_dir=/tmp/tfds_syn100k --manual_dir=/tmp/syn100k

Runs `emomv.load_run_data` (decode every split, hold out the selection part, fit and apply the standardisation)
on the config's dataset, building it first if needed, and prints the peak resident memory of the process
(`ru_maxrss`) against the bytes of the features it ends with. The peak is the process's, from its start.

With --train_steps=N and several folders (--manual_dir=A,B,...), each folder gets a fresh
`python -m emvgan_jax.main --config=... --config.train.max_steps=N` (load, train N steps, evaluate, write the
checkpoint and results) and one table row: its train rows, the GB of features on disk, the run's peak RSS and
its wall time:

  python -m benchmarks.memory --config=configs/features.py --data_dir=/tmp/feat \
      --manual_dir=/tmp/syn10k,/tmp/syn1m --train_steps=30
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from absl import flags

import benchmarks
from emvgan_jax import config_lib, errors
from emvgan_jax.tools import cli

_CONFIG = flags.DEFINE_string("config", "configs/emomv_c.py", "The run's config file (its data fields are used).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (built there on first use).")
_MANUAL_DIR = flags.DEFINE_list("manual_dir", None, "EmoMV-layout folder(s) (EmoMV's, or tfds_emomv.synthetic's).")
_TRAIN_STEPS = flags.DEFINE_integer(
  "train_steps",
  0,
  "> 0: measure a training run of this many steps per folder (0: load_run_data of one).",
  lower_bound=0,
)

# A training run in a fresh process, which reports its own peak when it exits.
_RUN = """
import atexit, resource, runpy, sys
atexit.register(lambda: print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, file=sys.stderr))
sys.argv = ["emvgan_jax.main", *sys.argv[1:]]
runpy.run_module("emvgan_jax.main", run_name="__main__")
"""

# What the measured process runs: one load_run_data, then its own peak and the bytes of the features it holds in
# memory (a split left on disk counts none), as JSON.
_CHILD = """
import json, resource, sys, time
import numpy as np
from emvgan_jax import config_lib
from emvgan_jax.data import emomv
config = config_lib.with_data(config_lib.load_config_file(sys.argv[1]), data_dir=sys.argv[2] or None,
                              manual_dir=sys.argv[3] or None)
t0 = time.perf_counter()
data = emomv.load_run_data(config)
seconds = time.perf_counter() - t0
splits = [s for s in (data.train, data.pairs, data.gallery, data.selection, data.selection_gallery) if s]
held = sum(x.nbytes for s in splits for x in (s.video, s.music) if isinstance(x, np.ndarray))
print(json.dumps({"rows": len(data.train), "features": held,
                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "seconds": seconds,
                  "dataset": config.data.dataset}))
"""


def _training_rows() -> None:
  """One fresh training run per folder; a row each (rows and bytes from the folder's built features.json)."""

  from tfds_emomv import features  # deferred: TFDS, once the flags are parsed

  print(benchmarks.machine())
  print("| folder | train rows | features on disk (GB) | peak RSS (GB) | run (s) |\n|---|---|---|---|---|")
  for folder in _MANUAL_DIR.value:
    with tempfile.TemporaryDirectory() as workdir:
      args = [
        f"--config={_CONFIG.value}",
        f"--workdir={workdir}",
        f"--config.data.manual_dir={folder}",
        f"--config.train.max_steps={_TRAIN_STEPS.value}",
        "--config.train.plots=False",
        *([f"--config.data.data_dir={_DATA_DIR.value}"] if _DATA_DIR.value else []),
      ]
      start = time.perf_counter()
      proc = subprocess.run([sys.executable, "-c", _RUN, *args], capture_output=True, text=True, check=False)
      seconds = time.perf_counter() - start
      peaks = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK ")]
      if proc.returncode or not peaks or not os.path.exists(os.path.join(workdir, "results.json")):
        raise errors.Error(f"the run on {folder} failed: {proc.stderr.strip().splitlines()[-2:]}")
    root = pathlib.Path(os.path.expanduser(folder)).resolve()
    built = features.build_dir(_DATA_DIR.value, folder, features.detect_layout(root))
    info = features.load_info(built)
    size = sum((built / s["file"]).stat().st_size for split in info["splits"].values() for s in split["shards"])
    print(
      f"| {folder} | {info['splits']['train']['rows']:,} | {size / 1e9:.2f} | {peaks[-1] / 1e9:.2f} | {seconds:.0f} |"
    )


def main(argv: list[str]) -> None:
  del argv

  def body() -> None:
    if _TRAIN_STEPS.value:
      _training_rows()
      return
    if len(_MANUAL_DIR.value or []) > 1:
      raise errors.UsageError("several --manual_dir folders go with --train_steps (one load_run_data is measured)")
    from emvgan_jax.data import emomv  # deferred: JAX loads once the flags are parsed

    config = config_lib.with_data(
      config_lib.load_config_file(_CONFIG.value), data_dir=_DATA_DIR.value, manual_dir=(_MANUAL_DIR.value or [None])[0]
    )
    emomv.load_run_data(config)  # builds the dataset if it is not built yet: not part of what is measured
    print(benchmarks.machine())
    args = [_CONFIG.value, _DATA_DIR.value or "", (_MANUAL_DIR.value or [""])[0]]
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, check=False)
    if proc.returncode:
      raise errors.Error(f"the measured process failed: {proc.stderr.strip().splitlines()[-1:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
      f"{r['dataset']} from {(_MANUAL_DIR.value or [None])[0]}: {r['rows']:,} train rows; the run's splits hold "
      f"{r['features'] / 1e9:.2f} GB of features; peak RSS of a fresh process loading them "
      f"{r['peak'] / 1e9:.2f} GB ({r['peak'] / r['features']:.1f}x); load_run_data {r['seconds']:.1f} s"
    )

  body()


if __name__ == "__main__":
  cli.run_app(main, __doc__)
