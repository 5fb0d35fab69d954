"""The features builder (`python -m tfds_emomv.features`) and splits read from disk a batch at a time: the same
rows as the `emomv` TFDS builder, widths from the files, every check of the EmoMV readers with nothing left
behind, and a streamed split giving the same batches, statistics and run as the same split in memory."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import h5py
import helpers
import numpy as np
import pytest

from emvgan_jax.data import pipeline, records, splits
from emvgan_jax.data.standardize import Standardizer
from tfds_emomv import features, synthetic
from tfds_emomv.emomv import files

REPO = str(helpers.REPO_ROOT)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("syn")
  synthetic.write_synthetic(str(root), 600, seed=1)
  return root


def _load(root, data_dir, stream_above_mb=1e9, need=None):
  return records.load_features(
    str(root), data_dir=str(data_dir), layout=None, stream_above_mb=stream_above_mb, need=need
  )


def _narrow(src: pathlib.Path, dst: pathlib.Path, video_dim: int, music_dim: int) -> None:
  """A copy of an EmoMV-C folder whose features are cut to other widths ("your own features")."""
  shutil.copytree(src, dst)
  for split in files.splits("c"):
    paths = files.split_files("c", split)
    for rel, key, dim in ((paths.video, "default", video_dim), (paths.music, "data", music_dim)):
      with h5py.File(src / rel) as f:
        data = f[key][:, :dim]
      with h5py.File(dst / rel, "w") as f:
        f.create_dataset(key, data=data)


def test_the_same_rows_as_the_emomv_builder_in_memory_and_on_disk(folder, tmp_path):
  tfds_splits = splits.load_dataset("emomv/c", data_dir=str(tmp_path / "tfds"), manual_dir=str(folder))
  in_memory = _load(folder, tmp_path / "f")
  on_disk = _load(folder, tmp_path / "f", stream_above_mb=0)
  assert set(in_memory) == set(tfds_splits) == {"train", "validation", "gallery"}
  for name, want in tfds_splits.items():
    assert not in_memory[name].on_disk and on_disk[name].on_disk
    video, music = on_disk[name].features(slice(None))
    for got in (in_memory[name], on_disk[name]):
      np.testing.assert_array_equal(got.name.astype(str), want.name.astype(str))
      for key in ("match", "video_emotion", "music_emotion"):
        np.testing.assert_array_equal(getattr(got, key), getattr(want, key))
    for got in (in_memory[name].video, video):
      np.testing.assert_array_equal(got, want.video)
    for got in (in_memory[name].music, music):
      np.testing.assert_array_equal(got, want.music)


def test_widths_come_from_the_files_and_shards_keep_row_order(folder, tmp_path):
  _narrow(folder, tmp_path / "own", 48, 16)
  out = features.build_features(str(tmp_path / "own"), str(tmp_path / "f"), shard_mb=1)
  info = features.load_info(out)
  assert (info["video_dim"], info["music_dim"]) == (48, 16)
  train = _load(tmp_path / "own", tmp_path / "f", stream_above_mb=0)["train"]
  with h5py.File(tmp_path / "own" / files.split_files("c", "train").video) as f:
    want = f["default"][()]
  assert train.video_dim == 48 and train.music_dim == 16
  rows = np.random.default_rng(0).permutation(len(train))[:50]
  np.testing.assert_array_equal(train.video[rows], want[rows])
  # 1 MiB shards of the 2,400-row wide folder: several of them, each of about equal rows, in row order.
  wide = features.load_info(features.build_features(str(folder), str(tmp_path / "g"), shard_mb=1))
  shards = wide["splits"]["train"]["shards"]
  assert len(shards) > 2 and sum(s["rows"] for s in shards) == wide["splits"]["train"]["rows"]
  assert len({s["rows"] for s in shards[:-1]}) == 1 and shards[-1]["rows"] <= shards[0]["rows"]
  full = _load(folder, tmp_path / "g", stream_above_mb=0)["train"]
  ref = _load(folder, tmp_path / "f2")["train"]
  np.testing.assert_array_equal(full.video[np.arange(len(full))], ref.video)


def _write_h5(path, key, data):
  with h5py.File(path, "w") as f:
    f.create_dataset(key, data=data)


def _assert_nothing_built(data_dir):
  base = pathlib.Path(data_dir) / "emvgan_features"
  left = [p for p in base.iterdir() if not p.name.endswith(".lock")] if base.exists() else []  # the build's lock
  assert not left, left


def test_bad_input_is_refused_in_one_line_and_nothing_is_left(folder, tmp_path):
  rel = files.split_files("c", "validation").video
  # A non-finite value in the last chunk of a split written after train: found mid-build, named by its row.
  bad = tmp_path / "nan"
  shutil.copytree(folder, bad)
  with h5py.File(folder / rel) as f:
    data = f["default"][()]
  data[-1, 7] = np.nan
  _write_h5(bad / rel, "default", data)
  with pytest.raises(files.EmoMVFormatError, match=rf"row {len(data)}, column 8: non-finite"):
    features.build_features(str(bad), str(tmp_path / "d1"))
  _assert_nothing_built(tmp_path / "d1")
  # Another width in one split than in the others.
  other = tmp_path / "width"
  shutil.copytree(folder, other)
  _write_h5(other / rel, "default", data[:, :100])
  with pytest.raises(files.EmoMVFormatError, match="100 wide, but .* has 2304"):
    features.build_features(str(other), str(tmp_path / "d2"))
  _assert_nothing_built(tmp_path / "d2")
  # A CSV row of the wrong kind, with the same message as the emomv builder's.
  csv_rel = files.split_files("c", "train").csv
  broken = tmp_path / "csv"
  shutil.copytree(folder, broken)
  lines = (broken / csv_rel).read_text().splitlines()
  lines[3] = lines[3].replace(",1,", ",2,", 1)
  (broken / csv_rel).write_text("\n".join(lines) + "\n")
  with pytest.raises(files.EmoMVFormatError, match=r"row 4, column 3 \(match\): 2"):
    features.build_features(str(broken), str(tmp_path / "d3"))
  _assert_nothing_built(tmp_path / "d3")
  # A folder with several dataset folders needs a layout.
  with pytest.raises(files.EmoMVMissingFileError, match="exactly one of"):
    features.detect_layout(pathlib.Path(REPO) / "tfds_emomv" / "emomv" / "dummy_data")


def test_a_changed_source_or_a_damaged_shard_is_refused(folder, tmp_path):
  src = tmp_path / "src"
  shutil.copytree(folder, src)
  out = features.build_features(str(src), str(tmp_path / "d"))
  shard = out / features.load_info(out)["splits"]["train"]["shards"][0]["file"]
  raw = bytearray(shard.read_bytes())
  raw[len(raw) // 2] ^= 1
  shard.write_bytes(bytes(raw))
  with pytest.raises(splits.DataError, match="train.array_record.* is damaged"):
    _load(src, tmp_path / "d")
  _load(src, tmp_path / "d", need=["validation"])  # a split not asked for is not checked
  csv_path = src / files.split_files("c", "gallery").csv
  csv_path.write_text(csv_path.read_text())  # same bytes, new modification time
  os.utime(csv_path, ns=(0, 0))
  with pytest.raises(splits.DataError, match=r"retrieval.csv has changed since .* --overwrite"):
    _load(src, tmp_path / "d")
  features.build_features(str(src), str(tmp_path / "d"), overwrite=True)
  assert len(_load(src, tmp_path / "d")["train"]) == features.load_info(out)["splits"]["train"]["rows"]


class _Counting:
  """A record source that notes which rows were read."""

  def __init__(self, source):
    self.source, self.read_rows = source, []

  def __len__(self):
    return len(self.source)

  def width(self, modality):
    return self.source.width(modality)

  def read(self, rows, transforms=(None, None)):
    self.read_rows.append(np.asarray(rows).copy())
    return self.source.read(rows, transforms)


def test_reads_of_several_fetches_and_blocks_equal_the_split_in_memory(folder, tmp_path, monkeypatch):
  """A read of more rows than one fetch, standardised as read, equals the in-memory rows standardised: every
  fetch reads its own records (small fetches and blocks, so that a few hundred rows cross several of each)."""
  monkeypatch.setattr(records, "READ_RECORDS", 64)
  monkeypatch.setattr(records, "BLOCK_RECORDS", 16)
  in_memory = _load(folder, tmp_path / "f")["train"]
  on_disk = _load(folder, tmp_path / "f", stream_above_mb=0)["train"]
  standardizer = Standardizer.fit(in_memory)
  mem, disk = standardizer.apply(in_memory), standardizer.apply(on_disk)
  rows = np.random.default_rng(0).permutation(len(mem))[:200]
  video, music = disk.features(rows)
  np.testing.assert_array_equal(video, mem.video[rows])
  np.testing.assert_array_equal(music, mem.music[rows])
  np.testing.assert_array_equal(disk.video[rows], mem.video[rows])  # one column at a time too


def _with_source(split, source):
  """`split` (on disk) with both feature columns read from `source`."""
  fields = {k: getattr(split, k) for k in ("name", "match", "video_emotion", "music_emotion")}
  for key in ("video", "music"):
    column = getattr(split, key)
    fields[key] = column.__class__(source, key, column.rows, column.transform)
  return splits.Split(**fields)


def test_batches_read_by_offset_equal_array_record_s_reader(folder, tmp_path, monkeypatch):
  """The shards `emomv-features` writes are read by byte offset, and every batch (standardised as read, of
  several staging blocks, rows in any order) is the one array_record's reader gives."""
  monkeypatch.setattr(records, "BLOCK_RECORDS", 16)
  on_disk = _load(folder, tmp_path / "f", stream_above_mb=0)["train"]
  fast = on_disk.video.source
  plain = records.ArrayRecordSource(fast.paths, fast.width("video"), fast.width("music"), by_offset=False)
  assert fast.by_offset and not plain.by_offset
  standardizer = Standardizer.fit(on_disk)
  by_offset, by_reader = standardizer.apply(on_disk), standardizer.apply(_with_source(on_disk, plain))
  kwargs = dict(global_batch_size=96, seed=3, epoch=0, drop_remainder=False)
  got = list(pipeline.iterate(pipeline.train_dataset(by_offset, **kwargs), prefetch=True))
  want = list(pipeline.iterate(pipeline.train_dataset(by_reader, **kwargs)))
  assert len(got) == len(want) > 1
  for a, b in zip(got, want):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  with pytest.raises(IndexError, match="asked of a split of"):
    fast.read(np.array([0, len(fast)]))


def test_streamed_batches_equal_in_memory_and_each_process_reads_only_its_share(folder, tmp_path):
  in_memory = _load(folder, tmp_path / "f")["train"]
  on_disk = _load(folder, tmp_path / "f", stream_above_mb=0)["train"]
  standardizer = Standardizer.fit(in_memory)
  assert Standardizer.fit(on_disk).to_dict().keys() == standardizer.to_dict().keys()
  for key, value in Standardizer.fit(on_disk).to_dict().items():
    np.testing.assert_array_equal(value, standardizer.to_dict()[key])
  mem, disk = standardizer.apply(in_memory), standardizer.apply(on_disk)
  # A holdout and a gallery of the split on disk map rows without reading them.
  held = disk.take(np.arange(0, len(disk), 3))
  assert held.on_disk and held.video.rows is held.music.rows
  counting = _Counting(disk.video.source)
  disk = _with_source(disk, counting)
  for epoch in (0, 1):
    shares = []
    for process in (0, 1):
      kwargs = dict(global_batch_size=64, seed=5, epoch=epoch, process_index=process, process_count=2)
      want = pipeline.train_dataset(mem, **kwargs)
      counting.read_rows.clear()
      got = list(pipeline.iterate(pipeline.train_dataset(disk, **kwargs), prefetch=True))
      assert len(got) == len(want)
      for b, batch in enumerate(got):
        for key, value in want[b].items():
          np.testing.assert_array_equal(batch[key], value, err_msg=key)
        for key in ("video", "music"):  # both paths' features start where a CPU device can take them uncopied
          assert batch[key].ctypes.data % splits.HOST_ALIGNMENT == 0
          assert want[b][key].ctypes.data % splits.HOST_ALIGNMENT == 0
      read = np.concatenate(counting.read_rows)
      assert len(read) == len(got) * 32  # one read per batch of this process's 32 rows, both modalities at once
      shares.append(read)
    order = np.random.default_rng(pipeline.epoch_seed(5, epoch)).permutation(len(mem))[: len(got) * 64]
    assert not set(shares[0]) & set(shares[1])
    assert set(shares[0]) | set(shares[1]) == set(order)


def test_the_cli_builds_and_says_what(folder, tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  cmd = [sys.executable, "-m", "tfds_emomv.features", f"--manual_dir={folder}", f"--data_dir={tmp_path}"]
  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert "video 2304 wide, music 128 wide" in out.stdout
  info = json.loads((pathlib.Path(out.stdout.split()[1]) / "features.json").read_text())
  assert info["source"] == str(folder.resolve())
  bad = subprocess.run(
    [*cmd[:3], f"--manual_dir={tmp_path}/nowhere"], cwd=REPO, env=env, capture_output=True, text=True
  )
  assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "does not exist" in bad.stderr


def _features_config(folder, data_dir, **overrides):
  from emvgan_jax import config_lib  # pylint: disable=g-import-not-at-top

  config = config_lib.load_config_file(os.path.join(REPO, "configs", "features.py"))
  small = {
    "data.manual_dir": str(folder),
    "data.data_dir": str(data_dir),
    "emvgan.hidden": 16,
    "emvgan.embed_dim": 8,
    "emvgan.disc_hidden": 16,
    "train.batch_size": 64,
    "train.eval_every_steps": 0,
    "train.max_steps": 12,
    "train.plots": False,
    "data.max_gallery_items": 30,
  }
  for key, value in {**small, **overrides}.items():
    config_lib.set_field(config, key, value)
  return config


@pytest.mark.slow
def test_a_run_from_disk_equals_the_run_in_memory_and_the_emomv_builders(folder, tmp_path):
  from emvgan_jax import train  # pylint: disable=g-import-not-at-top

  runs = {
    "memory": _features_config(folder, tmp_path / "f"),
    "disk": _features_config(folder, tmp_path / "f", **{"data.stream_above_mb": 0.0}),
    "tfds": _features_config(folder, tmp_path / "t", **{"data.dataset": "emomv/c"}),
  }
  results = {}
  for name, config in runs.items():
    results[name] = train.train_and_evaluate(config, str(tmp_path / name))
    results[name].pop("train_seconds", None)
    results[name].pop("provenance")  # its date, and the data folders that differ by design
    results[name].pop("dataset")
  assert results["memory"]["retrieval"]["gallery_size"] == 30 and results["memory"]["retrieval"]["sampled_from"] > 30
  assert results["disk"] == results["memory"] == results["tfds"]


@pytest.mark.slow
def test_evaluate_and_retrieve_read_a_run_whose_splits_stay_on_disk(folder, tmp_path):
  from emvgan_jax import train  # pylint: disable=g-import-not-at-top
  from emvgan_jax.data import emomv  # pylint: disable=g-import-not-at-top
  from emvgan_jax.evaluation import peers, retrieval
  from emvgan_jax.evaluation import run as evaluate
  from emvgan_jax.runtime import restore  # pylint: disable=g-import-not-at-top

  config = _features_config(folder, tmp_path / "f", **{"data.stream_above_mb": 0.0})
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  again = evaluate.evaluate_run(str(tmp_path / "run"), make_plots=False, out_dir=str(tmp_path / "eval")).results
  for key in ("classification", "retrieval"):  # the same sample of the gallery as training's
    assert again[key] == results[key]
  run = restore.load_run(str(tmp_path / "run"))
  gallery = retrieval.load_gallery(run)
  assert isinstance(gallery.video, np.ndarray) and len(gallery.name) == results["retrieval"]["sampled_from"]
  hits, _ = retrieval.retrieve(run, gallery, "video_to_music", query=str(gallery.name[0]), k=3)
  assert len(hits[0]) == 3
  with pytest.raises(emomv.DataError, match="stay on disk: raise config.data.stream_above_mb"):
    peer = config.copy_and_resolve_references()
    peer.model = "peer"
    peers.fit_and_evaluate(peer, str(tmp_path / "peer"))
  cv = _features_config(folder, tmp_path / "f", **{"data.stream_above_mb": 0.0, "data.cv_folds": 3})
  with pytest.raises(emomv.DataError, match="pools train and validation in memory"):
    emomv.load_run_data(cv)


def test_concurrent_builds_build_once_and_another_folder_is_another_dataset(folder, tmp_path):
  import threading  # pylint: disable=g-import-not-at-top

  from emvgan_jax import config_lib  # pylint: disable=g-import-not-at-top
  from emvgan_jax.data import emomv  # pylint: disable=g-import-not-at-top

  stale = tmp_path / "d" / "emvgan_features" / f".{features.build_dir(str(tmp_path / 'd'), str(folder), 'c').name}"
  (stale.parent / (stale.name + ".incomplete-1")).mkdir(parents=True)  # a killed build's leftovers
  outs, errors = [], []

  def build():
    try:
      outs.append(features.build_features(str(folder), str(tmp_path / "d")))
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=build) for _ in range(3)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors and len(set(outs)) == 1
  assert sorted(p.name for p in outs[0].parent.iterdir() if not p.name.endswith(".lock")) == [outs[0].name]
  # Asking for one split of another folder (evaluate on it) brings its gallery too.
  assert set(_load(folder, tmp_path / "d", need=["validation"])) == {"validation", "gallery"}
  run = config_lib.base_config()
  run.data.dataset, run.data.manual_dir = "features", str(folder)
  other = config_lib.with_data(run, manual_dir=str(tmp_path / "elsewhere"))
  assert emomv.same_data(run, config_lib.with_data(run, manual_dir=str(folder) + "/."))
  assert not emomv.same_data(run, other)
  assert emomv.own_data(run, None, str(tmp_path / "elsewhere")).data.manual_dir == str(folder)


@pytest.mark.slow
def test_a_failed_build_on_process_0_stops_both_processes(folder, tmp_path):
  import socket  # pylint: disable=g-import-not-at-top

  broken = tmp_path / "broken"
  shutil.copytree(folder, broken)
  csv_path = broken / files.split_files("c", "train").csv
  csv_path.write_text(csv_path.read_text().replace(",1,", ",7,", 1))
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = helpers.subprocess_env(1)
  args = [
    sys.executable, "-m", "emvgan_jax.main", "--config=configs/features.py", f"--workdir={tmp_path / 'w'}",
    f"--config.data.manual_dir={broken}", f"--config.data.data_dir={tmp_path / 'd'}", "--distributed",
    f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
  ]  # fmt: skip
  procs = [
    subprocess.Popen([*args, f"--process_id={i}"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    for i in range(2)
  ]
  errs = [p.communicate(timeout=180)[1] for p in procs]
  assert [p.returncode for p in procs] != [0, 0]
  assert "row 1, column 3 (match): 7" in errs[0], errs[0][-2000:]
  assert "process 0 could not build the features of" in errs[1], errs[1][-2000:]
