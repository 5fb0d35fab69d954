"""Builds EmoMV TFDS datasets to array_record (the `tfds build` CLI would need TensorFlow).

Usage:
  python -m tfds_emomv.build --datasets=emomv/c[,emomv/b,...] --data_dir=DIR [--manual_dir=DIR [--partial]]

With --manual_dir pointing at a copy laid out like https://github.com/ivyha010/EmoMV, each config is read from
its dataset folder there (a missing folder or file is an error naming it, unless --partial builds the splits whose
files are all there and lists the skipped ones); without it the files are downloaded.
Prints the examples per split of each built dataset. A dataset that cannot be built (missing or malformed file) gets
one error message on stderr, the others are still built, and the exit status is 1.
"""

from __future__ import annotations

import logging as std_logging
import sys
from collections.abc import Sequence

import tensorflow_datasets as tfds
from absl import app, flags, logging

import tfds_emomv  # noqa: F401  (registers the `emomv` builder)
from emvgan_jax import atomic, errors
from tfds_emomv import commands
from tfds_emomv.emomv import files
from tfds_emomv.emomv.prepare import build_one, skipped_splits

_DATASETS = flags.DEFINE_list(
  'datasets', None, 'Datasets to build, e.g. emomv/c,emomv/b (configs a, b, c).', required=True
)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data_dir to write the datasets into.', required=True)
_MANUAL_DIR = flags.DEFINE_string(
  'manual_dir', None, 'Optional local copy laid out like the EmoMV repository (else files are downloaded).'
)
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Rebuild a dataset that already exists in data_dir.')
_PARTIAL = flags.DEFINE_bool(
  'partial',
  False,
  'With --manual_dir: build every split whose files are there and skip the others (listed, with the files they '
  'lack), instead of refusing the dataset. Training needs its train split; evaluation only the split it reads.',
)


def main(argv: Sequence[str]) -> None:
  """Builds every dataset of --datasets; exits with status 1 when any of them failed.

  Args:
    argv: the command line left after absl parsed the flags (must hold only the program name).
  """
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  known = [f'emomv/{c}' for c in files.CONFIG_FOLDERS]
  unknown = [name for name in _DATASETS.value if name not in known]
  if unknown:
    commands.fail(f'error: --datasets: unknown {unknown[0]!r}; expected some of {",".join(known)}', 2)
  failed = []
  for name in _DATASETS.value:
    try:
      counts = build_one(name, _DATA_DIR.value, _MANUAL_DIR.value, _OVERWRITE.value, partial=_PARTIAL.value)
      skipped = skipped_splits(tfds.builder(name, data_dir=_DATA_DIR.value, file_format='array_record'))
    except (files.EmoMVFormatError, ValueError) as e:
      # One clear message instead of a traceback: these errors already say which file and what is wrong.
      print(f'error: cannot build {name}: {e}', file=sys.stderr)
      failed.append(name)
      continue
    except (OSError, RuntimeError) as e:  # an unreadable file, a full disk (array_record's is a RuntimeError)
      disk = e if isinstance(e, OSError) else atomic.as_disk_error(e, _DATA_DIR.value)
      if disk is None:
        raise
      print(f'error: cannot build {name}: {errors.os_error_line(disk)}', file=sys.stderr)
      failed.append(name)
      continue
    print(f'{name}: ' + ', '.join(f'{split}={n}' for split, n in counts.items()) + f'  ({_DATA_DIR.value})')
    for split, rels in skipped.items():
      print(f'{name}: skipped {split} (missing: {", ".join(rels)})')
  if failed:
    sys.exit(1)


def run() -> None:
  """Entry point (`python -m tfds_emomv.build`, the console script `emomv-build`): quiet logging, then absl's flag
  parsing and `main`; `--help` prints this tool's flags and exits 0 (absl's own exits 1 and lists every library's
  flags)."""
  sys.argv = commands.take_process_flags(sys.argv)
  if not commands.verbose():
    # TFDS logs progress bars and INFO lines; keep the output to the counts and errors.
    logging.set_verbosity(logging.WARNING)
    std_logging.getLogger('tensorflow_datasets').setLevel(std_logging.WARNING)
    tfds.disable_progress_bar()
  commands.run(main, __doc__, verbose_help='TFDS progress bars and logs.')


if __name__ == '__main__':
  run()
