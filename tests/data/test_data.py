"""Input pipeline: shuffling, process slicing, padding and masks, standardisation, the device seam, held-out
splits and galleries rebuilt from pairs."""

import jax
import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from emvgan_jax.data import emomv, pipeline, splits
from emvgan_jax.data.splits import ARRAY_KEYS, Split
from emvgan_jax.data.standardize import Standardizer
from emvgan_jax.runtime import sharding


def make_split(n: int, dv: int = 5, dm: int = 3, seed: int = 0) -> Split:
  rng = np.random.default_rng(seed)
  return Split(
    name=np.asarray([f"vid{i // 3}_{i % 3:02d}" for i in range(n)], dtype=object),
    video=rng.normal(2.0, 3.0, (n, dv)).astype(np.float32),
    music=rng.normal(-1.0, 0.5, (n, dm)).astype(np.float32),
    match=(np.arange(n) % 2).astype(np.int32),
    video_emotion=(np.arange(n) % 5).astype(np.int32),
    music_emotion=((np.arange(n) + 1) % 5).astype(np.int32),
  )


def epoch_rows(split, **kw):
  """The rows (identified by their video's first feature) of every valid example of one epoch, in order."""
  ds = pipeline.train_dataset(split, **kw)
  rows = []
  for batch in pipeline.iterate(ds):
    for v in batch["video"][batch["mask"]]:
      rows.append(int(np.flatnonzero((split.video == v).all(axis=1))[0]))
  return rows


def test_train_order_is_a_function_of_seed_and_epoch():
  split = make_split(50)
  a = epoch_rows(split, global_batch_size=8, seed=3, epoch=2, drop_remainder=False)
  b = epoch_rows(split, global_batch_size=8, seed=3, epoch=2, drop_remainder=False)
  c = epoch_rows(split, global_batch_size=8, seed=3, epoch=3, drop_remainder=False)
  d = epoch_rows(split, global_batch_size=8, seed=4, epoch=2, drop_remainder=False)
  assert a == b
  assert a != c and a != d
  assert sorted(a) == list(range(50))  # every row exactly once per epoch
  assert a != list(range(50))  # and shuffled


def test_drop_remainder_and_padding():
  split = make_split(21)
  dropped = pipeline.train_dataset(split, global_batch_size=8, seed=0, epoch=0, drop_remainder=True)
  assert len(dropped) == 2 and all(pipeline.iterate(dropped).__next__()["mask"])
  padded = pipeline.train_dataset(split, global_batch_size=8, seed=0, epoch=0, drop_remainder=False)
  batches = list(pipeline.iterate(padded))
  assert len(batches) == 3 == pipeline.num_train_steps_per_epoch(21, 8, drop_remainder=False)
  assert [int(b["mask"].sum()) for b in batches] == [8, 8, 5]
  assert all(b["video"].shape == (8, 5) for b in batches)
  with pytest.raises(ValueError, match="fewer than one global batch"):
    pipeline.train_dataset(make_split(5), global_batch_size=8, seed=0, epoch=0, drop_remainder=True)


def test_processes_split_each_global_batch():
  split = make_split(40)
  whole = list(
    pipeline.iterate(
      pipeline.train_dataset(split, global_batch_size=8, seed=1, epoch=0, process_index=0, process_count=1)
    )
  )
  parts = [
    list(
      pipeline.iterate(
        pipeline.train_dataset(split, global_batch_size=8, seed=1, epoch=0, process_index=p, process_count=4)
      )
    )
    for p in range(4)
  ]
  for b, batch in enumerate(whole):
    local = [parts[p][b] for p in range(4)]
    assert all(x["video"].shape == (2, 5) for x in local)
    np.testing.assert_array_equal(np.concatenate([x["video"] for x in local]), batch["video"])
  with pytest.raises(ValueError, match="not divisible by 3 processes"):
    pipeline.train_dataset(split, global_batch_size=8, seed=0, epoch=0, process_index=0, process_count=3)


def test_eval_is_in_order_with_padding_and_mask():
  split = make_split(11)
  batches = list(pipeline.iterate(pipeline.eval_dataset(split, global_batch_size=4)))
  assert len(batches) == 3
  np.testing.assert_array_equal(batches[2]["mask"], [True, True, True, False])
  video = np.concatenate([b["video"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(video, split.video)
  for key in ARRAY_KEYS:
    assert all(len(b[key]) == 4 for b in batches)


def test_standardizer_matches_scikit_learn_and_round_trips():
  split = make_split(30)
  split = Split(
    **{**split.__dict__, "video": np.concatenate([split.video[:, :4], np.ones((30, 1), np.float32)], axis=1)}
  )  # a constant feature
  std = Standardizer.fit(split)
  out = std.apply(split)
  np.testing.assert_allclose(out.video, StandardScaler().fit_transform(split.video), atol=1e-5)
  np.testing.assert_allclose(out.music, StandardScaler().fit_transform(split.music), atol=1e-5)
  again = Standardizer.from_dict(std.to_dict())
  np.testing.assert_array_equal(again.apply(split).video, out.video)
  with pytest.raises(ValueError, match="video width 5"):
    std.apply(make_split(4, dv=7))


def test_make_global_batch_shards_over_the_data_axis():
  assert jax.device_count() == 8
  mesh = sharding.make_mesh()
  batch = next(pipeline.iterate(pipeline.eval_dataset(make_split(16), global_batch_size=16)))
  arrays = pipeline.make_global_batch(batch, sharding.batch_sharding(mesh))
  assert arrays["video"].shape == (16, 5)
  assert len(arrays["video"].addressable_shards) == 8
  assert arrays["video"].addressable_shards[0].data.shape == (2, 5)
  np.testing.assert_array_equal(np.asarray(arrays["video"]), batch["video"])
  assert arrays["mask"].dtype == np.bool_


def test_batches_reach_cpu_devices_without_a_copy():
  # 16 float32 values a row: each of the 8 devices' 4-row shards starts on a 64-byte boundary of the batch.
  split = make_split(40, dv=16, dm=16)
  mesh = sharding.make_mesh()
  for batch in pipeline.iterate(pipeline.train_dataset(split, global_batch_size=32, seed=1, epoch=0)):
    rows = [int(np.flatnonzero(split.video[:, 0] == first)[0]) for first in batch["video"][:, 0]]
    np.testing.assert_array_equal(batch["video"], split.video[rows])  # the gathered rows are the split's rows
    np.testing.assert_array_equal(batch["music"], split.music[rows])
    arrays = pipeline.make_global_batch(batch, sharding.batch_sharding(mesh))
    for key in ("video", "music"):
      assert batch[key].ctypes.data % splits.HOST_ALIGNMENT == 0
      for shard in arrays[key].addressable_shards:  # each device's rows are the batch's own memory
        assert np.shares_memory(np.asarray(shard.data), batch[key])


def pair_split() -> Split:
  """Matched rows of videos a..d and mismatched pairs linking e<->f and g<->h, with their swaps."""
  names = [
    "a_01",
    "a_02",
    "b_01",
    "c_01",
    "d_01",
    "e_01_PAIR_f_01",
    "f_01_PAIR_e_01",
    "g_01_PAIR_h_01",
    "h_01_PAIR_g_01",
  ]
  emo = {"a_01": 0, "a_02": 0, "b_01": 1, "c_01": 2, "d_01": 3, "e_01": 0, "f_01": 4, "g_01": 1, "h_01": 2}
  n = len(names)
  video = np.zeros((n, 2), np.float32)
  music = np.zeros((n, 2), np.float32)
  seg_code = {s: i + 1 for i, s in enumerate(emo)}
  ve, me, match = [], [], []
  for i, name in enumerate(names):
    segs = name.split("_PAIR_") if "_PAIR_" in name else [name, name]
    video[i] = seg_code[segs[0]]  # video features identify the video's segment
    music[i] = -seg_code[segs[1]]  # music features identify the music's segment
    ve.append(emo[segs[0]])
    me.append(emo[segs[1]])
    match.append(int(segs[0] == segs[1]))
  return Split(
    name=np.asarray(names, dtype=object),
    video=video,
    music=music,
    match=np.asarray(match, np.int32),
    video_emotion=np.asarray(ve, np.int32),
    music_emotion=np.asarray(me, np.int32),
  )


def test_holdout_keeps_videos_and_swapped_pairs_on_one_side():
  split = pair_split()
  for seed in range(5):
    train, held = emomv.holdout_split(split, fraction=0.4, seed=seed)
    assert len(train) + len(held) == len(split) and len(held) > 0
    vids = lambda s: {emomv.video_id(seg) for n in s.name for seg in emomv.segment_ids(n)}  # noqa: E731
    assert not vids(train) & vids(held)
    for part in (train, held):
      names = set(part.name)
      for n in names:
        if "_PAIR_" in n:
          a, b = n.split("_PAIR_")
          assert f"{b}_PAIR_{a}" in names


def test_gallery_from_pairs_rebuilds_each_segments_own_pair():
  gallery = emomv.gallery_from_pairs(pair_split())
  assert list(gallery.name) == ["a_01", "a_02", "b_01", "c_01", "d_01", "e_01", "f_01", "g_01", "h_01"]
  # Item i's video and music are both segment i's own (codes +k and -k).
  np.testing.assert_array_equal(gallery.video, -gallery.music)
  np.testing.assert_array_equal(gallery.video_emotion, [0, 0, 1, 2, 3, 0, 4, 1, 2])
  assert (gallery.match == 1).all()


def test_epoch_seed_is_stable():
  # Pinned: a change here silently changes every run's data order (and breaks resuming old runs).
  assert pipeline.epoch_seed(0, 0) == pipeline.epoch_seed(0, 0)
  assert len({pipeline.epoch_seed(s, e) for s in range(4) for e in range(4)}) == 16


def _videos(split: Split) -> set[str]:
  return {emomv.video_id(seg) for n in split.name for seg in emomv.segment_ids(n)}


def test_grouped_folds_partition_rows_without_sharing_a_video():
  split = pair_split()
  for seed in range(4):
    fold = emomv.grouped_folds(split, folds=3, seed=seed)
    assert sorted(set(fold)) == [0, 1, 2]  # every fold used, every row in exactly one
    parts = [split.take(fold == f) for f in range(3)]
    for i in range(3):
      for j in range(i + 1, 3):
        assert not _videos(parts[i]) & _videos(parts[j])
    # e<->f and g<->h are linked by mismatched pairs: each pair and its swap land in one fold.
    assert fold[5] == fold[6] and fold[7] == fold[8]
  assert not np.array_equal(emomv.grouped_folds(split, folds=3, seed=0), emomv.grouped_folds(split, folds=3, seed=1))
  with pytest.raises(ValueError, match="at least 2 folds"):
    emomv.grouped_folds(split, folds=1, seed=0)
  with pytest.raises(ValueError, match="cannot fill"):
    emomv.grouped_folds(split, folds=50, seed=0)


def test_real_c_cv_folds_keep_youtube_ids_apart(emomv_dir):
  """EmoMV-C train + validation in 5 grouped folds: no YouTube id on two sides of any cut the protocol makes."""
  from tfds_emomv.emomv import files  # pylint: disable=g-import-not-at-top

  pool = Split.concat([Split.from_arrays(files.read_split(emomv_dir, "c", s)) for s in ("train", "validation")])
  assert len(pool) == 360 + 96
  for repeat in range(2):
    fold = emomv.grouped_folds(pool, folds=5, seed=repeat)
    sizes = np.bincount(fold, minlength=5)
    assert sizes.sum() == len(pool) and sizes.max() - sizes.min() <= 8  # balanced to within a video or two
    for f in range(5):
      train, held = pool.take(fold != f), pool.take(fold == f)
      fit, selection = emomv.holdout_split(train, fraction=0.2, seed=repeat)
      assert not _videos(train) & _videos(held)
      assert not _videos(fit) & _videos(selection)
      gallery = emomv.gallery_from_pairs(held)
      assert set(gallery.name) <= {s for n in held.name for s in emomv.segment_ids(n)}


def test_split_concat_refuses_shared_names():
  split = pair_split()
  both = Split.concat([split.take(np.arange(3)), split.take(np.arange(3, 9))])
  np.testing.assert_array_equal(both.video, split.video)
  with pytest.raises(ValueError, match="share pair names"):
    Split.concat([split, split.take(np.arange(2))])


@pytest.mark.parametrize(
  "fields, message",
  [
    ({"cv_folds": 5, "cv_fold": 5, "selection_fraction": 0.2}, "0 <= cv_fold < cv_folds"),
    ({"cv_folds": 1, "selection_fraction": 0.2}, "cv_folds >= 2"),
    ({"cv_folds": 5, "selection_fraction": 0.0}, "needs a selection holdout"),
    ({"cv_folds": 5, "selection_fraction": 0.2, "holdout_fraction": 0.2}, "set data.holdout_fraction=0"),
    ({"selection_fraction": 1.0}, r"must be in \[0, 1\)"),
  ],
)
def test_protocol_fields_that_do_not_go_together_are_refused(fields, message):
  from emvgan_jax import config_lib  # pylint: disable=g-import-not-at-top

  config = config_lib.base_config()
  for key, value in fields.items():
    config.data[key] = value
  with pytest.raises(emomv.DataError, match=message):
    emomv.check_protocol(config)


@pytest.mark.slow
def test_cv_run_data_trains_selects_and_reports_on_disjoint_videos(tiny_run):
  """`load_run_data` under cross-validation on the built dummy dataset: the three parts share no video, the
  statistics come from the training part, and together the parts are train + validation."""
  from emvgan_jax import config_lib  # pylint: disable=g-import-not-at-top

  config = config_lib.with_data(config_lib.load_config_file(tiny_run.spec), data_dir=tiny_run.data_dir)
  config.data.selection_fraction = 0.0
  plain = emomv.load_run_data(config)
  config.data.cv_folds, config.data.cv_fold, config.data.selection_fraction = 2, 1, 0.3
  data = emomv.load_run_data(config)
  assert (data.pairs_name, data.gallery_name, data.selection_name) == (
    emomv.CV_SPLIT,
    emomv.CV_GALLERY,
    emomv.SELECTION_SPLIT,
  )
  assert data.selects_apart and emomv.selection_split(config) == emomv.SELECTION_SPLIT
  parts = (data.train, data.selection, data.pairs)
  for i in range(3):
    for j in range(i + 1, 3):
      assert not _videos(parts[i]) & _videos(parts[j])
  assert sorted(np.concatenate([p.name for p in parts])) == sorted(np.concatenate([plain.train.name, plain.pairs.name]))
  # Standardised with the training part's statistics: mean 0 there (not on the other parts).
  np.testing.assert_allclose(data.train.video.mean(axis=0), 0.0, atol=1e-5)
  assert emomv.run_split(config) == emomv.CV_SPLIT and emomv.run_split(config, "emomv/a") == "test"


def test_standardizer_streams_and_in_place_equals_a_new_copy(monkeypatch):
  from emvgan_jax.data import standardize  # pylint: disable=g-import-not-at-top
  from emvgan_jax.data.splits import Split  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  n = 1000
  split = Split(
    name=np.asarray([str(i) for i in range(n)], dtype=object),
    video=(rng.random((n, 9)) * 5 + 100).astype(np.float32),  # a large mean: a naive sum of squares would drift
    music=rng.normal(size=(n, 4)).astype(np.float32),
    match=np.zeros(n, np.int32),
    video_emotion=np.zeros(n, np.int32),
    music_emotion=np.zeros(n, np.int32),
  )
  split.music[:, 2] = 3.0  # a constant feature keeps std 1
  monkeypatch.setattr(standardize, "CHUNK_ROWS", 64)  # 16 chunks, the last one short
  s = standardize.Standardizer.fit(split)
  x = split.video.astype(np.float64)
  np.testing.assert_array_equal(s.video_mean, x.mean(0).astype(np.float32))
  np.testing.assert_allclose(s.video_std, x.std(0), rtol=1e-6)
  assert s.music_std[2] == 1.0
  copy = s.apply(split)
  assert copy.video is not split.video and np.array_equal(split.video, x.astype(np.float32))  # input unchanged
  np.testing.assert_array_equal(copy.video, (split.video - s.video_mean) / s.video_std)
  video = split.video
  same = s.apply(split, in_place=True)
  assert same.video is video  # the same array, overwritten
  np.testing.assert_array_equal(same.video, copy.video)
  np.testing.assert_array_equal(same.music, copy.music)


def test_config_json_records_the_data_folder_that_emomv_dir_supplied(monkeypatch, tmp_path):
  from emvgan_jax import config_lib  # pylint: disable=g-import-not-at-top

  config = config_lib.load_config_file("configs/emomv_c.py")
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.setenv("EMOMV_DIR", "~/emomv")
  assert config.data.manual_dir is None
  assert emomv.as_recorded(config).data.manual_dir == str(tmp_path / "emomv")
  assert config.data.manual_dir is None  # the run's own config is left as it was
  monkeypatch.delenv("EMOMV_DIR")
  assert emomv.as_recorded(config).data.manual_dir is None  # downloaded
