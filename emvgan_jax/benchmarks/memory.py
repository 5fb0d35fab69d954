"""Host memory of loading a run's data: `python -m emvgan_jax.benchmarks.memory --data_dir=D --manual_dir=M`.

  python -m tfds_emomv.synthetic --out_dir=/tmp/syn100k --num_pairs=100000
  python -m emvgan_jax.benchmarks.memory --data_dir=/tmp/tfds_syn100k --manual_dir=/tmp/syn100k

Runs `emomv.load_run_data` (decode every split, hold out the selection part, fit and apply the standardisation)
on the config's dataset, building it first if needed, and prints the peak resident memory of the process
(`ru_maxrss`) against the bytes of the features it ends with. Run it in a fresh process per figure: the peak
is the process's, from its start.
"""

import json
import subprocess
import sys

from absl import flags

from emvgan_jax.runtime import cli

_CONFIG = flags.DEFINE_string("config", "configs/emomv_c.py", "The run's config file (its data fields are used).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (built there on first use).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "The EmoMV-layout folder (EmoMV's, or tfds_emomv.synthetic's).")

# What the measured process runs: one load_run_data, then its own peak and the features' bytes, as JSON.
_CHILD = """
import json, resource, sys, time
from emvgan_jax import config_lib
from emvgan_jax.data import emomv
config = config_lib.with_data(config_lib.load_config_file(sys.argv[1]), data_dir=sys.argv[2] or None,
                              manual_dir=sys.argv[3] or None)
t0 = time.perf_counter()
data = emomv.load_run_data(config)
seconds = time.perf_counter() - t0
splits = [s for s in (data.train, data.pairs, data.gallery, data.selection, data.selection_gallery) if s]
print(json.dumps({"rows": len(data.train), "features": sum(s.video.nbytes + s.music.nbytes for s in splits),
                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "seconds": seconds,
                  "dataset": config.data.dataset}))
"""


def main(argv: list[str]) -> None:
  del argv

  def body() -> None:
    from emvgan_jax import benchmarks, config_lib  # pylint: disable=g-import-not-at-top
    from emvgan_jax.data import emomv  # pylint: disable=g-import-not-at-top

    config = config_lib.with_data(
      config_lib.load_config_file(_CONFIG.value), data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value
    )
    emomv.load_run_data(config)  # builds the dataset if it is not built yet: not part of what is measured
    print(benchmarks.machine())
    args = [_CONFIG.value, _DATA_DIR.value or "", _MANUAL_DIR.value or ""]
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, check=False)
    if proc.returncode:
      raise cli.ToolError(f"the measured process failed: {proc.stderr.strip().splitlines()[-1:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
      f"{r['dataset']} from {_MANUAL_DIR.value}: {r['rows']:,} train rows; the run's splits hold "
      f"{r['features'] / 1e9:.2f} GB of features; peak RSS of a fresh process loading them "
      f"{r['peak'] / 1e9:.2f} GB ({r['peak'] / r['features']:.1f}x); load_run_data {r['seconds']:.1f} s"
    )

  cli.run_tool(body)


if __name__ == "__main__":
  cli.run_app(main, __doc__)
