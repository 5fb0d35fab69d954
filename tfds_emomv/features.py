"""Features of any size, from any folder in EmoMV's layout, built once into array_record shards of raw rows.

Usage:
  python -m tfds_emomv.features --manual_dir=DIR [--data_dir=D] [--layout=a|b|c] [--shard_mb=128] [--overwrite]

DIR is laid out like the EmoMV repository: EmoMV's own copy, a folder written by `python -m tfds_emomv.synthetic`,
or a user's own features put in EmoMV-C's layout (`DS3_EmoMV_C/annotation/*.csv`, `extracted_features/*.h5`,
`for_retrieval/...`: docs/data.md). Unlike the `emomv` TFDS builder, nothing fixes the feature widths: they are
read from the HDF5 files (every split of one modality must agree). Every check of the `emomv` builder applies
(`tfds_emomv/emomv/files.py`: CSV columns, emotion ids and names, unique names, the swap of every mismatched pair,
one feature row per CSV row, finite features), and every CSV and HDF5 header is checked before anything is
written; the features are then read and written a chunk at a time, so a split larger than memory builds.

What is written, into `D/emvgan_features/<folder name>-<hash of its path>/` (D: --data_dir, else
~/tensorflow_datasets), first under a temporary name and renamed when complete, so no half-built folder is ever
read:
  * `<split>.array_record-NNNNN-of-MMMMM`: one record per row, the row's float32 video then music values (no
    framing of their own: a batch decodes with one `np.frombuffer`), uncompressed with group size 1 (what
    random access wants), in shards of about --shard_mb MiB so that readers read several files in parallel;
  * `<split>.labels.npz`: names, match and emotion labels (small; read into memory);
  * `features.json`: the widths, the rows and SHA-256 of every file, and the size and modification time of every
    source file, so that a later run refuses a built folder its source no longer matches.

Why not a TFDS builder: a raw row is read with one copy, a TFDS example is decoded field by field.
`python -m benchmarks.input_pipeline --compare_tfds` measures the two, interleaved (docs/benchmarks.md: about 12x
on 2 cores). Fixed-size uncompressed records also let a reader find a row's bytes by offset (`emvgan_jax/data/
offsets.py`), which the split reader on disk does.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import math
import os
import pathlib
import shutil
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
from absl import app, flags
from array_record.python import array_record_module

from emvgan_jax import atomic
from tfds_emomv import commands
from tfds_emomv.emomv import files

FORMAT = "emvgan-features/1"
INFO = "features.json"
SHARD_MB = 128  # MiB per shard: the 1M-pair synthetic train split (EmoMV's widths) is 58 shards
CHUNK_ROWS = 8192  # rows read from the HDF5 files at a time
RECORD_OPTIONS = "uncompressed,group_size:1"


class FeaturesError(files.EmoMVFormatError):
  """A built features folder cannot be used as it is (missing, damaged, or from a source that changed)."""


def detect_layout(root: pathlib.Path, layout: str | None = None) -> str:
  """The config ('a', 'b' or 'c') whose dataset folder `root` holds: `layout` if given, else the only one.

  Raises:
    files.EmoMVMissingFileError: `root` is missing, holds none of the dataset folders, or holds several and no
      `layout` says which.
  """
  if not root.is_dir():
    raise files.EmoMVMissingFileError(f"{root} does not exist: pass a folder laid out like the EmoMV repository")
  present = [c for c, folder in files.CONFIG_FOLDERS.items() if (root / folder).is_dir()]
  if layout:
    if layout not in present:
      raise files.EmoMVMissingFileError(f"{root} has no {files.CONFIG_FOLDERS[layout]}/ folder (layout {layout!r})")
    return layout
  if len(present) != 1:
    found = ", ".join(files.CONFIG_FOLDERS[c] for c in present) or "none"
    raise files.EmoMVMissingFileError(
      f"{root} must hold exactly one of {', '.join(files.CONFIG_FOLDERS.values())} (found: {found}); say which "
      "with --layout (or --config.data.layout) a, b or c"
    )
  return present[0]


def build_dir(data_dir: str | None, manual_dir: str, layout: str) -> pathlib.Path:
  """Where the features of `manual_dir` (its folder `layout`) are built under `data_dir`."""
  root = pathlib.Path(os.path.expanduser(manual_dir)).resolve()
  key = hashlib.sha256(f"{root}\0{layout}".encode()).hexdigest()[:12]
  base = pathlib.Path(os.path.expanduser(data_dir or "~/tensorflow_datasets"))
  return base / "emvgan_features" / f"{root.name or 'root'}-{layout}-{key}"


def source_stamp(root: pathlib.Path, layout: str) -> dict[str, list[int]]:
  """(size, modification time in ns) of every source file of the layout, by repository-relative path."""
  stamp = {}
  for rel in files.config_files(layout):
    st = (root / rel).stat()
    stamp[rel] = [st.st_size, st.st_mtime_ns]
  return stamp


def _sha256(path: pathlib.Path) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def _read_labels(root: pathlib.Path, layout: str) -> dict[str, dict[str, np.ndarray]]:
  labels = {}
  for split in files.splits(layout):
    paths = files.split_files(layout, split)
    reader = files.read_pair_labels if paths.kind == "pairs" else files.read_gallery_labels
    labels[split] = reader(root / paths.csv)
  pair_splits = {s: v["name"] for s, v in labels.items() if files.split_files(layout, s).kind == "pairs"}
  files.check_disjoint_splits(pair_splits, {s: root / files.split_files(layout, s).csv for s in pair_splits})
  return labels


def _open_features(
  root: pathlib.Path, layout: str, labels: dict[str, dict[str, np.ndarray]], stack: contextlib.ExitStack
) -> dict[str, tuple[files.FeatureFile, files.FeatureFile]]:
  """Every split's two feature files, opened and checked against its CSV and against each other's widths."""
  opened, widths = {}, {}
  for split in labels:
    paths = files.split_files(layout, split)
    pair = []
    for modality, rel in (("video", paths.video), ("music", paths.music)):
      f = stack.enter_context(files.FeatureFile(root / rel))
      files.check_feature_rows(f.name, f.rows, root / paths.csv, len(labels[split]["name"]))
      first = widths.setdefault(modality, (f.width, f.name))
      if f.width != first[0]:
        raise files.EmoMVFormatError(
          f"{f.name}: {modality} features are {f.width} wide, but {first[1]} has {first[0]}; every split of a "
          "modality must have one width"
        )
      pair.append(f)
    opened[split] = tuple(pair)
  return opened


def _write_split(
  out: pathlib.Path,
  split: str,
  video: files.FeatureFile,
  music: files.FeatureFile,
  shard_mb: int,
  progress: Callable[[str], None],
) -> list[dict]:
  """Writes one split's shards; returns [{file, rows, sha256}] in row order."""

  n, row_bytes = video.rows, 4 * (video.width + music.width)
  num_shards = max(1, math.ceil(n * row_bytes / (shard_mb << 20)))
  per_shard = math.ceil(n / num_shards) if n else 0
  shards, last_report = [], time.monotonic()
  for s in range(num_shards):
    name = f"{split}.array_record-{s:05d}-of-{num_shards:05d}"
    start, stop = s * per_shard, min(n, (s + 1) * per_shard)
    writer = array_record_module.ArrayRecordWriter(str(out / name), RECORD_OPTIONS)
    try:
      try:
        for a in range(start, stop, CHUNK_ROWS):
          b = min(stop, a + CHUNK_ROWS)
          rows = np.concatenate([video.read(a, b), music.read(a, b)], axis=1)
          for row in rows:
            writer.write(row.tobytes())
          if time.monotonic() - last_report > 10:
            progress(f"{split}: {b:,} of {n:,} rows written")
            last_report = time.monotonic()
      finally:
        writer.close()
    except RuntimeError as e:  # array_record reports a failed write (a full disk) as a RuntimeError
      raise atomic.as_disk_error(e, out.parent) or e from None
    shards.append({"file": name, "rows": stop - start, "sha256": _sha256(out / name)})
  return shards


def build_features(
  manual_dir: str,
  data_dir: str | None = None,
  *,
  layout: str | None = None,
  shard_mb: int = SHARD_MB,
  overwrite: bool = False,
  progress: Callable[[str], None] = lambda line: None,
) -> pathlib.Path:
  """Builds (or finds built) the features of `manual_dir`; returns the built folder.

  Raises:
    files.EmoMVFormatError: a source file is missing or malformed (nothing is left behind).
    FeaturesError: the folder is built from a source that has changed since (without `overwrite`).
  """
  root = pathlib.Path(os.path.expanduser(manual_dir)).resolve()
  layout = detect_layout(root, layout)
  out = build_dir(data_dir, manual_dir, layout)
  if (out / INFO).is_file() and not overwrite:
    check_source(load_info(out), out)
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  with open(out.parent / f".{out.name}.lock", "w", encoding="utf-8") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # two runs building one folder: the second waits, then finds it built
    if (out / INFO).is_file() and not overwrite:
      check_source(load_info(out), out)
      return out
    for stale in os.listdir(out.parent):  # of a killed build (the lock is ours)
      if stale.startswith(f".{out.name}.incomplete-"):
        shutil.rmtree(out.parent / stale, ignore_errors=True)
    _build(root, layout, out, shard_mb, progress)
  return out


def _build(root: pathlib.Path, layout: str, out: pathlib.Path, shard_mb: int, progress: Callable[[str], None]) -> None:
  """Validates the source, then writes the folder under a temporary name and renames it to `out`."""
  missing = files.find_missing(root, layout)
  if missing:
    raise files.EmoMVMissingFileError(files.missing_files_message(root, missing))
  stamp = source_stamp(root, layout)
  labels = _read_labels(root, layout)
  tmp = out.parent / f".{out.name}.incomplete-{os.getpid()}"
  tmp.mkdir(parents=True)
  try:
    with contextlib.ExitStack() as stack:
      features = _open_features(root, layout, labels, stack)
      info = {"format": FORMAT, "layout": layout, "source": str(root), "source_files": stamp, "splits": {}}
      for split, (video, music) in features.items():
        info["video_dim"], info["music_dim"] = video.width, music.width
        shards = _write_split(tmp, split, video, music, shard_mb, progress)
        label_file = f"{split}.labels.npz"
        arrays = labels[split]
        np.savez(
          tmp / label_file,
          name=np.char.encode(arrays["name"], "utf-8"),
          **{k: arrays[k].astype(np.int8) for k in ("match", "video_emotion", "music_emotion")},
        )
        info["splits"][split] = {
          "rows": video.rows,
          "kind": files.split_files(layout, split).kind,
          "shards": shards,
          "labels": {"file": label_file, "sha256": _sha256(tmp / label_file)},
        }
        progress(f"{split}: {video.rows:,} rows in {len(shards)} shard(s)")
    (tmp / INFO).write_text(json.dumps(info, indent=1), encoding="utf-8")
    if out.exists():
      shutil.rmtree(out)
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def load_info(folder: pathlib.Path) -> dict:
  """The `features.json` of a built folder.

  Raises:
    FeaturesError: there is none, it cannot be parsed, or it is of another format.
  """
  path = pathlib.Path(folder) / INFO
  try:
    info = json.loads(path.read_text(encoding="utf-8"))
  except FileNotFoundError:
    raise FeaturesError(f"{path} does not exist: {folder} is not a built features folder") from None
  except (OSError, ValueError) as e:
    raise FeaturesError(f"{path} cannot be read ({e}); delete {folder} to rebuild it") from None
  if not isinstance(info, dict) or info.get("format") != FORMAT:
    raise FeaturesError(f"{path} is not of format {FORMAT}; delete {folder} to rebuild it")
  return info


def check_source(info: dict, folder: pathlib.Path) -> None:
  """Refuses a built folder whose source files changed (size or modification time) or are gone.

  Raises:
    FeaturesError: naming the first such file and how to rebuild.
  """
  root = pathlib.Path(info["source"])
  for rel, (size, mtime) in info["source_files"].items():
    path = root / rel
    try:
      st = path.stat()
    except OSError:
      state = "is gone"
    else:
      state = None if (st.st_size, st.st_mtime_ns) == (size, mtime) else "has changed"
    if state:
      raise FeaturesError(
        f"{path} {state} since {folder} was built from it; rebuild with `python -m tfds_emomv.features "
        f"--manual_dir={root} --layout={info['layout']} --overwrite` (and the same --data_dir)"
      )


def verify(info: dict, folder: pathlib.Path, split: str) -> None:
  """Checks one split's files against the SHA-256 recorded when they were built.

  Raises:
    FeaturesError: a file is missing or differs, naming it.
  """
  entry = info["splits"][split]
  items = [*entry["shards"], entry["labels"]]
  paths = [pathlib.Path(folder) / item["file"] for item in items]
  for path in paths:
    if not path.is_file():
      raise FeaturesError(f"{path} is missing: delete {folder} to rebuild it from {info['source']}")
  # hashlib releases the GIL while it hashes, so the files are hashed on every core at once.
  with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(paths), os.cpu_count() or 1)) as pool:
    digests = list(pool.map(_sha256, paths))
  for path, item, digest in zip(paths, items, digests):
    if digest != item["sha256"]:
      raise FeaturesError(
        f"{path} is damaged (it differs from the file built): delete {folder} to rebuild it from {info['source']}"
      )


def _define_flags() -> None:
  """The command's flags, defined only when it runs (a program importing this module keeps its own)."""
  global _MANUAL_DIR, _DATA_DIR, _LAYOUT, _SHARD_MB, _OVERWRITE  # pylint: disable=global-statement
  _MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder in EmoMV's layout (DS1_EmoMV_A/, ... DS3_EmoMV_C/).")
  _DATA_DIR = flags.DEFINE_string("data_dir", None, "Where to build (default ~/tensorflow_datasets).")
  _LAYOUT = flags.DEFINE_enum(
    "layout", None, list(files.CONFIG_FOLDERS), "Which dataset folder of DIR (default: the only one there)."
  )
  _SHARD_MB = flags.DEFINE_integer("shard_mb", SHARD_MB, "About how many MiB per array_record shard.", lower_bound=1)
  _OVERWRITE = flags.DEFINE_bool("overwrite", False, "Rebuild when the folder is already built.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _MANUAL_DIR.value is None:
    print("error: --manual_dir is required (see --help)", file=sys.stderr)
    sys.exit(2)
  started = time.monotonic()
  try:
    out = build_features(
      _MANUAL_DIR.value,
      _DATA_DIR.value,
      layout=_LAYOUT.value,
      shard_mb=_SHARD_MB.value,
      overwrite=_OVERWRITE.value,
      progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
  except files.EmoMVFormatError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  except OSError as e:  # e.g. a --data_dir that cannot be written
    print(f"error: {e.filename or _DATA_DIR.value}: {e.strerror or e}", file=sys.stderr)
    sys.exit(1)
  info = load_info(out)
  counts = ", ".join(f"{s}={v['rows']}" for s, v in info["splits"].items())
  print(
    f"built {out} in {time.monotonic() - started:.0f} s: video {info['video_dim']} wide, music "
    f"{info['music_dim']} wide; {counts}"
  )


def run() -> None:
  """Entry point (`python -m tfds_emomv.features`, the console script `emomv-features`)."""
  _define_flags()
  commands.run(main, __doc__)


if __name__ == "__main__":
  run()
