"""Input-pipeline throughput on an EmoMV train split, in examples/s.

  python -m emvgan_jax.benchmarks.input_pipeline --dataset=emomv/c --data_dir=/tmp/tfds \
      --manual_dir=$EMOMV_DIR --batch_size=256

Measures what a training step waits for, twice: producing this process's standardised numpy batches (shuffled per
epoch, gathered from the host cache), then that plus turning them into sharded global jax.Arrays (on a GPU or TPU
this copy overlaps the previous step). Epochs are iterated for --seconds each; a first epoch is warm-up.
"""

import time

from absl import flags

from emvgan_jax.data import pipeline
from emvgan_jax.data import splits as splits_lib
from emvgan_jax.data.standardize import Standardizer
from emvgan_jax.runtime import cli

_DATASET = flags.DEFINE_string("dataset", "emomv/c", "TFDS dataset name with config.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (built there on first use).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Local copy of the EmoMV repository (None: download).")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Global batch size.")
_SECONDS = flags.DEFINE_float("seconds", 3.0, "How long to measure.")
_DROP = flags.DEFINE_bool(
  "drop_remainder", True, "Full batches only (False: the short last batch is padded, and only its valid rows count)."
)


def main(argv: list[str]) -> None:
  del argv
  import jax  # pylint: disable=g-import-not-at-top

  from emvgan_jax.runtime import sharding  # pylint: disable=g-import-not-at-top

  t0 = time.perf_counter()
  splits = splits_lib.load_dataset(_DATASET.value, data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value)
  train = Standardizer.fit(splits["train"]).apply(splits["train"])
  print(f"loaded {_DATASET.value} train ({len(train)} examples) in {time.perf_counter() - t0:.2f} s")
  batch_sharding = sharding.batch_sharding(sharding.make_mesh())

  def one_epoch(epoch: int, to_device: bool) -> int:
    ds = pipeline.train_dataset(train, global_batch_size=_BATCH.value, seed=0, epoch=epoch, drop_remainder=_DROP.value)
    n = 0
    for batch in pipeline.iterate(ds):
      if to_device:
        jax.block_until_ready(pipeline.make_global_batch(batch, batch_sharding))
      n += int(batch["mask"].sum())
    return n

  for to_device, what in ((False, "numpy batches (the loader)"), (True, "+ host->device (sharded jax.Array)")):
    one_epoch(0, to_device)
    examples, epoch, start = 0, 1, time.perf_counter()
    while time.perf_counter() - start < _SECONDS.value:
      examples += one_epoch(epoch, to_device)
      epoch += 1
    elapsed = time.perf_counter() - start
    print(
      f"input pipeline, {what}: {examples / elapsed:,.0f} examples/s "
      f"(batch {_BATCH.value}, drop_remainder={_DROP.value}, {epoch - 1} epochs, {jax.device_count()} device(s))"
    )


if __name__ == "__main__":
  cli.run_app(main, __doc__)
