"""Tests of the `emomv` TFDS builder: on dummy_data (written by make_dummy_data.py), and on the real files when
$EMOMV_DIR is set.

Every build writes array_record files to a temporary data_dir and is read back with `tfds.data_source`. The
dummy builds and the real EmoMV-C build run once per session.
"""

import csv
import hashlib
import pathlib
import re
import shutil
import subprocess
import sys

import h5py
import helpers
import numpy as np
import pytest
import tensorflow_datasets as tfds

import tfds_emomv  # noqa: F401  (registers `emomv`)
from tfds_emomv.emomv import files, make_dummy_data, prepare

REPO_ROOT = helpers.REPO_ROOT
PACKAGE_DIR = pathlib.Path(files.__file__).resolve().parent
DUMMY = PACKAGE_DIR / 'dummy_data'

# Rows per split of dummy_data (see make_dummy_data.py).
DUMMY_COUNTS = {
  'a': {'train': 6, 'validation': 4, 'test': 4, 'gallery': 6},
  'b': {'train': 4, 'validation': 4, 'gallery': 4},
  'c': {'train': 6, 'validation': 4, 'gallery': 4},
}
MISSING_REAL = {
  'a': [
    'DS1_EmoMV_A/extracted_features/SlowFast_DS1_TRAIN_MATCH_MISMATCH.h5',
    'DS1_EmoMV_A/extracted_features/SlowFast_DS1_VAL_MATCH_MISMATCH.h5',
    'DS1_EmoMV_A/for_retrieval/SlowFast_DS1_from_MVED_test_set_5_classes_for_retrieval.h5',
  ],
  'b': ['DS2_EmoMV_B/extracted_features/SlowFast_DS2_TRAIN_MATCH_MISMATCH.h5'],
}


def _build(config, data_dir, manual_dir=None):
  builder = tfds.builder(f'emomv/{config}', data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
  )
  return builder


def _read_all(config, split, data_dir):
  """Every row of a built split, in order, as a dict of stacked arrays."""
  source = tfds.data_source(f'emomv/{config}', split=split, data_dir=data_dir)
  rows = source.__getitems__(list(range(len(source))))
  out = {key: np.stack([row[key] for row in rows]) for key in ('video', 'music')}
  for key in ('match', 'video_emotion', 'music_emotion'):
    out[key] = np.asarray([row[key] for row in rows], dtype=np.int64)
  out['name'] = [row['name'].decode() for row in rows]
  return out


def _raw_h5(path):
  """The single dataset of an HDF5 file as stored (independent of files.read_features)."""
  with h5py.File(path, 'r') as f:
    (key,) = list(f.keys())
    return f[key][()]


def _raw_csv(path):
  with open(path, newline='') as f:
    return [row for row in csv.reader(f) if row]


def _expected_from_raw(root, config, split):
  """Names and labels parsed straight from the CSV, by the published column layout."""
  paths = files.split_files(config, split)
  rows = _raw_csv(root / paths.csv)
  if paths.kind == 'pairs':
    return {
      'name': [r[1] for r in rows],
      'match': [int(r[2]) for r in rows],
      'video_emotion': [int(r[5]) for r in rows],
      'music_emotion': [int(r[6]) for r in rows],
    }
  labels = [int(r[-1]) for r in rows]
  if len(rows[0]) == 3:
    names = [f'{files.EMOTIONS[int(r[2])]}_{r[1].removesuffix(".mp4")}' for r in rows]
  else:
    names = [r[1] for r in rows]
  return {'name': names, 'match': [1] * len(rows), 'video_emotion': labels, 'music_emotion': labels}


def _assert_split_equals_files(root, config, split, data_dir):
  got = _read_all(config, split, data_dir)
  paths = files.split_files(config, split)
  video, music = _raw_h5(root / paths.video), _raw_h5(root / paths.music)
  assert got['video'].dtype == np.float32 and got['music'].dtype == np.float32
  np.testing.assert_array_equal(got['video'], video.astype(np.float32))
  np.testing.assert_array_equal(got['music'], music.astype(np.float32))
  expected = _expected_from_raw(root, config, split)
  for key, value in expected.items():
    assert list(got[key]) == value, (config, split, key)


def _leftovers(data_dir, config):
  data_dir = pathlib.Path(data_dir)
  return [p for p in data_dir.rglob('*') if 'incomplete' in p.name] + [
    p for p in [data_dir / 'emomv' / config / '1.0.0'] if p.exists()
  ]


@pytest.fixture(scope='session')
def dummy_data_dir(tmp_path_factory):
  """A data_dir with emomv/a, emomv/b and emomv/c built from dummy_data through manual_dir."""
  data_dir = tmp_path_factory.mktemp('tfds_dummy')
  for config in files.CONFIG_FOLDERS:
    _build(config, data_dir, manual_dir=DUMMY)
  return data_dir


@pytest.fixture(scope='session')
def real_c_data_dir(emomv_dir, tmp_path_factory):
  """A data_dir with emomv/c built from the real files."""
  data_dir = tmp_path_factory.mktemp('tfds_real')
  _build('c', data_dir, manual_dir=emomv_dir)
  return data_dir


# --- the builder on dummy_data -----------------------------------------------------------------------------------


def test_registered_info():
  builder = tfds.builder('emomv/c', data_dir='/nonexistent-emomv-data-dir')
  info = builder.info
  assert [c.name for c in builder.BUILDER_CONFIGS] == ['a', 'b', 'c']
  assert str(builder.version) == '1.0.0'
  assert info.disable_shuffling
  features = info.features
  assert features['video'].shape == (2304,) and features['video'].np_dtype == np.float32
  assert features['music'].shape == (128,) and features['music'].np_dtype == np.float32
  assert features['match'].names == ['mismatched', 'matched']
  assert features['video_emotion'].names == list(files.EMOTIONS) == features['music_emotion'].names
  assert isinstance(features['name'], tfds.features.Text)
  assert 'Information Fusion' in info.citation


@pytest.mark.parametrize('config', ['a', 'b', 'c'])
def test_dummy_split_sizes(dummy_data_dir, config):
  builder = tfds.builder(f'emomv/{config}', data_dir=dummy_data_dir)
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  assert {name: split.num_examples for name, split in builder.info.splits.items()} == DUMMY_COUNTS[config]
  for split, count in DUMMY_COUNTS[config].items():
    assert len(tfds.data_source(f'emomv/{config}', split=split, data_dir=dummy_data_dir)) == count


@pytest.mark.parametrize('config, split', [(c, s) for c in DUMMY_COUNTS for s in DUMMY_COUNTS[c]])
def test_dummy_rows_equal_files(dummy_data_dir, config, split):
  _assert_split_equals_files(DUMMY, config, split, dummy_data_dir)


@pytest.mark.parametrize('config', ['a', 'b', 'c'])
def test_dummy_names_unique_and_in_one_split(dummy_data_dir, config):
  seen = {}
  for split in files.splits(config):
    names = _read_all(config, split, dummy_data_dir)['name']
    assert len(set(names)) == len(names), (config, split)
    if split != 'gallery':  # gallery items are segments, some of which also name a matched pair
      for name in names:
        assert name not in seen, f'{name} in {seen.get(name)} and {split}'
        seen[name] = split


def test_dummy_label_parsing(dummy_data_dir):
  # EmoMV-C spells emotions with a capital (`Relax`), EmoMV-A in lower case: both parse to the same ids.
  c_val = _read_all('c', 'validation', dummy_data_dir)
  assert c_val['name'][2] == 'fakeC12val3_07_PAIR_fakeC13val4_06'
  assert (c_val['match'][2], c_val['video_emotion'][2], c_val['music_emotion'][2]) == (0, 4, 2)
  assert (c_val['match'][1], c_val['video_emotion'][1], c_val['music_emotion'][1]) == (1, 3, 3)
  a_test = _read_all('a', 'test', dummy_data_dir)
  assert list(a_test['match']) == [1, 1, 0, 0]
  assert list(a_test['video_emotion']) == [0, 3, 4, 2]
  assert list(a_test['music_emotion']) == [0, 3, 2, 4]
  # The mismatched pair A_PAIR_B holds A's video and B's music, the same features as in the gallery.
  c_gallery = _read_all('c', 'gallery', dummy_data_dir)
  first, second = c_val['name'][2].split('_PAIR_')
  np.testing.assert_array_equal(c_val['video'][2], c_gallery['video'][c_gallery['name'].index(first)])
  np.testing.assert_array_equal(c_val['music'][2], c_gallery['music'][c_gallery['name'].index(second)])


def test_dummy_three_column_gallery_names_and_float64(dummy_data_dir):
  gallery = _read_all('a', 'gallery', dummy_data_dir)
  # The same bare file name FAKE_EXT(1).mp4 sits in the Excited and the Fear folder: two distinct names.
  assert gallery['name'] == [
    'exciting_FAKE_EXT(1)',
    'sad_FAKE_DL(82)-5-of-8',
    'relax_FAKE_RELX(33)-2-of-11',
    'tense_FAKE_TENS(56)',
    'fear_FAKE_EXT(1)',
    'tense_FAKE_TT(5)',
  ]
  assert list(gallery['video_emotion']) == list(gallery['music_emotion']) == [0, 3, 4, 2, 1, 2]
  assert list(gallery['match']) == [1] * 6
  # Every segment of the test pairs is in the gallery under the same name.
  test_segments = {seg for name in _read_all('a', 'test', dummy_data_dir)['name'] for seg in name.split('_PAIR_')}
  assert test_segments <= set(gallery['name'])
  music_file = DUMMY / files.split_files('a', 'gallery').music
  assert _raw_h5(music_file).dtype == np.float64  # the quirk is really in the dummy file
  with h5py.File(DUMMY / files.split_files('c', 'gallery').video) as f:
    assert list(f.keys()) == ['default']
  with h5py.File(music_file) as f:
    assert list(f.keys()) == ['data']


def test_dummy_data_is_what_make_dummy_data_writes(tmp_path):
  """dummy_data (CSVs committed, features written by the script) is complete and reproducible (compared by
  content: HDF5 bytes vary by version)."""
  make_dummy_data.make_dummy_data(tmp_path)
  made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*') if p.is_file())
  committed = sorted(p.relative_to(DUMMY) for p in DUMMY.rglob('*') if p.is_file())
  assert made == committed, 'dummy_data is incomplete: run python -m tfds_emomv.emomv.make_dummy_data'
  assert len(made) == sum(len(files.config_files(c)) for c in files.CONFIG_FOLDERS)
  for rel in made:
    if rel.suffix == '.csv':
      assert (tmp_path / rel).read_bytes() == (DUMMY / rel).read_bytes(), rel
    else:
      with h5py.File(tmp_path / rel) as new, h5py.File(DUMMY / rel) as old:
        assert list(new.keys()) == list(old.keys()), rel
        (key,) = list(new.keys())
        assert new[key].dtype == old[key].dtype, rel
        np.testing.assert_array_equal(new[key][()], old[key][()])


def test_download_mode_uses_public_urls(tmp_path, monkeypatch):
  """Without a usable manual_dir every file is fetched from its GitHub URL via the download manager."""
  requested = []

  def fake_download(self, url_or_urls):
    del self
    assert isinstance(url_or_urls, str)
    requested.append(url_or_urls)
    assert url_or_urls.startswith(files.BASE_URL)
    return DUMMY / url_or_urls[len(files.BASE_URL) :]

  monkeypatch.setattr(tfds.download.DownloadManager, 'download', fake_download)
  monkeypatch.setattr(files, 'check_reachable', lambda url: None)  # this machine has no network
  _build('c', tmp_path / 'data')
  assert requested == [files.url_for(rel) for rel in files.config_files('c')]
  _assert_split_equals_files(DUMMY, 'c', 'gallery', tmp_path / 'data')


def test_download_failure_names_url(tmp_path, monkeypatch):
  def failing_download(self, url_or_urls):
    raise OSError('network unreachable')

  monkeypatch.setattr(tfds.download.DownloadManager, 'download', failing_download)
  monkeypatch.setattr(files, 'check_reachable', lambda url: None)
  with pytest.raises(files.EmoMVMissingFileError, match='from https://github.com/ivyha010/EmoMV/raw/main/DS3_'):
    _build('c', tmp_path)
  assert _leftovers(tmp_path, 'c') == []


def test_checksums_tsv():
  rows = [line.split('\t') for line in (PACKAGE_DIR / 'checksums.tsv').read_text().splitlines() if line]
  all_files = {rel for config in files.CONFIG_FOLDERS for rel in files.config_files(config)}
  listed = set()
  for url, size, sha256, filename in rows:
    rel = url.removeprefix(files.BASE_URL)
    assert rel in all_files and filename == rel.rsplit('/', 1)[-1]
    assert int(size) > 0 and len(sha256) == 64
    listed.add(rel)
  # All files but the four without a known checksum.
  assert all_files - listed == {rel for missing in MISSING_REAL.values() for rel in missing}
  assert len(rows) == len(listed) == 26
  builder = tfds.builder('emomv/c', data_dir='/nonexistent-emomv-data-dir')
  assert set(builder.url_infos) == {files.BASE_URL + rel for rel in listed}


# --- validation: every bad input fails the build and leaves nothing behind ----------------------------------------


def _edit_csv(path, edit):
  rows = _raw_csv(path)
  edit(rows)
  with open(path, 'w', newline='') as f:
    csv.writer(f, lineterminator='\n').writerows(rows)


def _rewrite_h5(path, edit):
  array = _raw_h5(path)
  with h5py.File(path, 'r') as f:
    (key,) = list(f.keys())
  array = edit(array)
  path.unlink()
  with h5py.File(path, 'w') as f:
    f.create_dataset(key, data=array)


def _set(row, column, value):
  def edit(rows):
    rows[row][column] = value

  return edit


def _add_second_dataset(path):
  with h5py.File(path, 'a') as f:
    f.create_dataset('extra', data=[1.0])


def _nan_at(row, column):
  def edit(array):
    array = array.copy()
    array[row, column] = np.nan
    return array

  return edit


C_TRAIN = files.split_files('c', 'train')
C_VAL = files.split_files('c', 'validation')
C_GALLERY = files.split_files('c', 'gallery')


def _in(rel, message):
  """Regex: the file's name, then `message`."""
  return re.escape(rel.rsplit('/', 1)[-1]) + message


# (file to corrupt, corruption, regex the error must match: the file named first, then what is wrong)
_CORRUPTIONS = {
  # A CSV that gained a row is reported by the first feature file compared with it.
  'csv_row_count': (
    C_TRAIN.csv,
    lambda p: _edit_csv(p, lambda rows: rows.append(list(rows[0]))),
    _in(C_TRAIN.video, r': 6 feature rows, but .*DS3_TRAIN_MATCH_MISMATCH_labels\.csv has 7 rows'),
  ),
  'h5_row_count': (
    C_VAL.music,
    lambda p: _rewrite_h5(p, lambda a: a[:-1]),
    _in(C_VAL.music, r': 3 feature rows, but .*DS3_VAL_MATCH_MISMATCH_labels\.csv has 4 rows'),
  ),
  'video_width': (
    C_GALLERY.video,
    lambda p: _rewrite_h5(p, lambda a: a[:, :2048]),
    _in(C_GALLERY.video, r': features are 2048 wide, expected 2304'),
  ),
  'music_width': (
    C_TRAIN.music,
    lambda p: _rewrite_h5(p, lambda a: np.pad(a, ((0, 0), (0, 1)))),
    _in(C_TRAIN.music, r': features are 129 wide, expected 128'),
  ),
  'nan': (
    C_VAL.video,
    lambda p: _rewrite_h5(p, _nan_at(2, 7)),
    _in(C_VAL.video, r': row 3, column 8: non-finite value'),
  ),
  'inf_gallery': (
    C_GALLERY.music,
    lambda p: _rewrite_h5(p, lambda a: np.where(a > -1, np.inf, a)),
    _in(C_GALLERY.music, r': row 1, column 1: non-finite value'),
  ),
  'emotion_id_range': (
    C_TRAIN.csv,
    lambda p: _edit_csv(p, _set(4, 6, '5')),
    _in(C_TRAIN.csv, r': row 5, column 7 \(music_emotion_id\): 5 is outside 0..4'),
  ),
  'emotion_name_disagrees': (
    C_VAL.csv,
    lambda p: _edit_csv(p, _set(0, 3, 'Fear')),
    _in(C_VAL.csv, r": row 1, column 4 \(video_emotion\): emotion 'Fear' disagrees with its id 0"),
  ),
  'gallery_emotion_disagrees': (
    C_GALLERY.csv,
    lambda p: _edit_csv(p, _set(3, 2, 'Sad')),
    _in(C_GALLERY.csv, r": row 4, column 3 \(emotion\): emotion 'Sad' disagrees with its id 2"),
  ),
  'gallery_label_range': (
    C_GALLERY.csv,
    lambda p: _edit_csv(p, _set(1, 3, '9')),
    _in(C_GALLERY.csv, r': row 2, column 4 \(label_id\): 9 is outside 0..4'),
  ),
  'match_value': (
    C_TRAIN.csv,
    lambda p: _edit_csv(p, _set(1, 2, '2')),
    _in(C_TRAIN.csv, r': row 2, column 3 \(match\): 2, expected 0 \(mismatched\) or 1 \(matched\)'),
  ),
  'column_count': (
    C_VAL.csv,
    lambda p: _edit_csv(p, lambda rows: rows[3].pop()),
    _in(C_VAL.csv, r': row 4 has 6 columns, expected 7'),
  ),
  'non_integer': (
    C_TRAIN.csv,
    lambda p: _edit_csv(p, _set(0, 5, 'zero')),
    _in(C_TRAIN.csv, r": row 1, column 6 \(video_emotion_id\): 'zero' is not an integer"),
  ),
  'gallery_duplicate_name': (
    C_GALLERY.csv,
    lambda p: _edit_csv(p, _set(2, 1, 'fakeC1_val1_06')),
    _in(C_GALLERY.csv, r": row 3: gallery name 'fakeC1_val1_06' repeats row 1"),
  ),
  'two_h5_datasets': (C_TRAIN.video, _add_second_dataset, _in(C_TRAIN.video, r': expected exactly one HDF5 dataset')),
  # A pair in two splits names both CSV files (a matched pair of the same emotion, so each file alone is valid).
  'pair_in_two_splits': (
    C_VAL.csv,
    lambda p: _edit_csv(p, _set(0, 1, 'fakeC00trn1_02')),
    r"pair 'fakeC00trn1_02' is in both .*DS3_TRAIN_MATCH_MISMATCH_labels\.csv \(the train split\) and "
    r'.*DS3_VAL_MATCH_MISMATCH_labels\.csv \(the validation split\)',
  ),
}


@pytest.fixture
def dummy_copy(tmp_path):
  """A writable copy of dummy_data's EmoMV-C."""
  root = tmp_path / 'emomv_copy'
  shutil.copytree(DUMMY / 'DS3_EmoMV_C', root / 'DS3_EmoMV_C')
  return root


@pytest.mark.parametrize('case', sorted(_CORRUPTIONS))
def test_bad_input_fails_cleanly(dummy_copy, tmp_path, case):
  rel, corrupt, pattern = _CORRUPTIONS[case]
  corrupt(dummy_copy / rel)
  data_dir = tmp_path / 'data'
  with pytest.raises(files.EmoMVFormatError, match=pattern):
    _build('c', data_dir, manual_dir=dummy_copy)
  assert _leftovers(data_dir, 'c') == []


def test_missing_file_fails_cleanly(dummy_copy, tmp_path):
  (dummy_copy / C_VAL.video).unlink()
  data_dir = tmp_path / 'data'
  with pytest.raises(files.EmoMVMissingFileError) as info:
    _build('c', data_dir, manual_dir=dummy_copy)
  assert f'{C_VAL.video} (download: {files.url_for(C_VAL.video)})' in str(info.value)
  assert _leftovers(data_dir, 'c') == []


def test_cli(tmp_path):
  """The build command prints the counts, and fails with one clear message (no traceback) on a bad copy."""
  copy = tmp_path / 'copy'
  shutil.copytree(DUMMY, copy)
  (copy / C_TRAIN.music).unlink()
  data_dir = tmp_path / 'data'
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'tfds_emomv.build',
      '--datasets=emomv/b,emomv/c',
      f'--data_dir={data_dir}',
      f'--manual_dir={copy}',
    ],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert result.returncode == 1, result.stderr
  assert 'emomv/b: train=4, validation=4, gallery=4' in result.stdout
  assert 'error: cannot build emomv/c' in result.stderr
  assert f'{C_TRAIN.music} (download: {files.url_for(C_TRAIN.music)})' in result.stderr
  assert 'Traceback' not in result.stderr
  assert not (data_dir / 'emomv' / 'c').exists()
  assert (data_dir / 'emomv' / 'b' / '1.0.0').is_dir()


# --- real data ($EMOMV_DIR) -------------------------------------------------------------------------------------


def test_real_c_counts(real_c_data_dir):
  builder = tfds.builder('emomv/c', data_dir=real_c_data_dir)
  assert {name: split.num_examples for name, split in builder.info.splits.items()} == {
    'train': 360,
    'validation': 96,
    'gallery': 96,
  }


@pytest.mark.parametrize('split', ['train', 'validation', 'gallery'])
def test_real_c_rows_equal_files(emomv_dir, real_c_data_dir, split):
  _assert_split_equals_files(emomv_dir, 'c', split, real_c_data_dir)


def test_real_c_names(real_c_data_dir):
  names = {split: _read_all('c', split, real_c_data_dir)['name'] for split in ('train', 'validation', 'gallery')}
  assert not set(names['train']) & set(names['validation'])
  assert len(set(names['gallery'])) == 96
  assert names['gallery'][0] == names['validation'][0] == 'yA9WhYnsD_4_06'
  gallery = _read_all('c', 'gallery', real_c_data_dir)
  assert np.bincount(gallery['video_emotion'], minlength=5).tolist() == [33, 7, 11, 22, 23]


@pytest.mark.parametrize('config', ['a', 'b'])
def test_real_a_b_fail_naming_missing_files(emomv_dir, tmp_path, config):
  with pytest.raises(files.EmoMVMissingFileError) as info:
    _build(config, tmp_path, manual_dir=emomv_dir)
  message = str(info.value)
  for rel in MISSING_REAL[config]:
    assert f'{rel} (download: https://github.com/ivyha010/EmoMV/raw/main/{rel})' in message
  assert _leftovers(tmp_path, config) == []


@pytest.fixture(scope='session')
def real_partial_data_dir(emomv_dir, tmp_path_factory):
  """emomv/a and emomv/b built from the real copy with --partial: every split whose files are all there."""
  data_dir = tmp_path_factory.mktemp('tfds_real_partial')
  result = subprocess.run(
    [sys.executable, '-m', 'tfds_emomv.build', '--datasets=emomv/a,emomv/b', f'--data_dir={data_dir}']
    + [f'--manual_dir={emomv_dir}', '--partial'],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return data_dir, result.stdout


def test_real_partial_builds_hold_the_complete_splits_and_list_the_skipped(real_partial_data_dir):
  data_dir, stdout = real_partial_data_dir
  assert 'emomv/a: test=248' in stdout and 'emomv/b: validation=120, gallery=120' in stdout
  expected = {
    'a': {'train': MISSING_REAL['a'][0:1], 'validation': MISSING_REAL['a'][1:2], 'gallery': MISSING_REAL['a'][2:3]},
    'b': {'train': MISSING_REAL['b']},
  }
  for config, skipped in expected.items():
    builder = tfds.builder(f'emomv/{config}', data_dir=data_dir)
    assert prepare.skipped_splits(builder) == skipped, config
    for split, rels in skipped.items():
      assert f'emomv/{config}: skipped {split} (missing: {", ".join(rels)})' in stdout


@pytest.mark.parametrize('config, split', [('a', 'test'), ('b', 'validation'), ('b', 'gallery')])
def test_real_partial_splits_equal_the_files(emomv_dir, real_partial_data_dir, config, split):
  _assert_split_equals_files(emomv_dir, config, split, real_partial_data_dir[0])


def test_a_split_skipped_by_a_partial_build_is_refused_naming_its_files(real_partial_data_dir):
  from emvgan_jax.data import splits as splits_lib  # pylint: disable=g-import-not-at-top

  data_dir = str(real_partial_data_dir[0])
  with pytest.raises(splits_lib.DataError, match=r'emomv/b in .* was built without its train split .*SlowFast_DS2_TR'):
    splits_lib.load_dataset('emomv/b', data_dir=data_dir)  # training reads every split
  got = splits_lib.load_dataset('emomv/b', data_dir=data_dir, need=['validation'])
  assert {k: len(v) for k, v in got.items()} == {'validation': 120, 'gallery': 120}


def test_a_partial_build_of_a_copy_with_no_complete_split_is_refused(dummy_copy, tmp_path):
  for split in files.splits('c'):
    (dummy_copy / files.split_files('c', split).video).unlink(missing_ok=True)
  with pytest.raises(files.EmoMVMissingFileError, match='EmoMV file'):
    prepare.build_one('emomv/c', str(tmp_path / 'data'), str(dummy_copy), partial=True)
  assert _leftovers(tmp_path / 'data', 'c') == []


def test_real_a_gallery_names_and_float64(emomv_dir):
  """EmoMV-A's gallery CSV (3 columns, float64 music) reads with unique names matching the test pairs."""
  paths = files.split_files('a', 'gallery')
  music = files.read_features(emomv_dir / paths.music, dim=128)
  assert music.dtype == np.float32 and music.shape == (250, 128)
  assert _raw_h5(emomv_dir / paths.music).dtype == np.float64
  # The SlowFast gallery file is missing from the copy: read the CSV with the music file in its place.
  gallery = files.read_gallery(emomv_dir / paths.csv, emomv_dir / paths.music, emomv_dir / paths.music, video_dim=128)
  assert len(set(gallery['name'])) == 250
  assert np.bincount(gallery['video_emotion']).tolist() == [50] * 5
  test = files.read_split(emomv_dir, 'a', 'test')
  segments = {seg for name in test['name'] for seg in name.split('_PAIR_')}
  assert len(segments) == 248 and segments <= set(gallery['name'])


def test_real_checksums_match_files(emomv_dir):
  for line in (PACKAGE_DIR / 'checksums.tsv').read_text().splitlines():
    url, size, sha256, _ = line.split('\t')
    path = emomv_dir / url.removeprefix(files.BASE_URL)
    assert path.stat().st_size == int(size), path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256, path


def test_a_given_manual_dir_is_never_silently_replaced_by_a_download(tmp_path, monkeypatch):
  def no_download(self, url_or_urls):
    raise AssertionError('downloaded despite a manual_dir')

  monkeypatch.setattr(tfds.download.DownloadManager, 'download', no_download)
  with pytest.raises(files.EmoMVMissingFileError, match=r'manual_dir .*nowhere does not exist: point it \(EMOMV_DIR'):
    _build('c', tmp_path / 'data', manual_dir=tmp_path / 'nowhere')
  other = tmp_path / 'manual'
  shutil.copytree(DUMMY / 'DS2_EmoMV_B', other / 'DS2_EmoMV_B')
  with pytest.raises(files.EmoMVMissingFileError, match='has no DS3_EmoMV_C/ folder'):
    _build('c', tmp_path / 'data', manual_dir=other)
  assert _leftovers(tmp_path / 'data', 'c') == []


def test_offline_download_fails_fast_with_the_local_copy_hint(tmp_path, monkeypatch):
  import socket  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top

  def unreachable(address, timeout=None):
    raise OSError('Network is unreachable')

  monkeypatch.setattr(socket, 'create_connection', unreachable)
  t0 = time.time()
  with pytest.raises(
    files.EmoMVMissingFileError, match='cannot reach github.com .* set EMOMV_DIR or --config.data.manual_dir'
  ):
    _build('c', tmp_path)
  assert time.time() - t0 < 30


def _pair_rows():
  return [
    ['d', 'a_1', '1', 'sad', 'sad', '3', '3'],
    ['d', 'b_1_PAIR_c_1', '0', 'fear', 'relax', '1', '4'],
    ['d', 'c_1_PAIR_b_1', '0', 'relax', 'fear', '4', '1'],
  ]


@pytest.mark.parametrize(
  'change, message',
  [
    (lambda rows: rows.append(list(rows[0])), r"row 4: pair name 'a_1' repeats row 1"),
    (lambda rows: rows[0].__setitem__(2, '0'), r"row 1 \(a_1\): match=0 but the video emotion is 'sad' and the music"),
    (lambda rows: rows[1].__setitem__(2, '1'), r'row 2 .*match=1 but'),
    (lambda rows: rows[1].__setitem__(1, 'b_1_c_1'), "mismatched pair 'b_1_c_1' is not named A_PAIR_B"),
    (lambda rows: rows.pop(2), "has no swap 'c_1_PAIR_b_1'"),
  ],
)
def test_pair_split_inconsistencies_are_refused_naming_the_row(tmp_path, change, message):
  import csv  # pylint: disable=g-import-not-at-top

  import h5py  # pylint: disable=g-import-not-at-top

  rows = _pair_rows()
  change(rows)
  with open(tmp_path / 'pairs.csv', 'w', newline='') as f:
    csv.writer(f).writerows(rows)
  for name, key, dim in (('v.h5', 'default', 2304), ('m.h5', 'data', 128)):
    with h5py.File(tmp_path / name, 'w') as f:
      f.create_dataset(key, data=np.ones((len(rows), dim), np.float32))
  with pytest.raises(files.EmoMVFormatError, match=message):
    files.read_pairs(tmp_path / 'pairs.csv', tmp_path / 'v.h5', tmp_path / 'm.h5')


def test_a_pair_in_two_splits_is_refused():
  with pytest.raises(files.EmoMVFormatError, match="pair 'x_1' is in both the train and the validation split"):
    files.check_disjoint_splits({'train': ['a_1', 'x_1'], 'validation': ['x_1']})
  files.check_disjoint_splits({'train': ['a_1'], 'validation': ['b_1']})


@pytest.mark.slow
def test_tfds_data_source_works_without_tensorflow_or_extra_kwargs(tmp_path):
  """From a user's own code: build and read through the standard TFDS calls, no file_format, no TensorFlow."""
  code = f"""
import sys
import tensorflow_datasets as tfds
import tfds_emomv.emomv  # registers emomv
builder = tfds.builder('emomv/c', data_dir={str(tmp_path)!r})
builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir={str(DUMMY)!r}))
source = tfds.data_source('emomv/c', split='gallery', data_dir={str(tmp_path)!r})
row = source[0]
assert row['video'].shape == (2304,) and row['music'].shape == (128,), row
assert 'tensorflow' not in sys.modules or sys.modules['tensorflow'] is None
print(len(source), builder.info.file_format)
"""
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  n, fmt = result.stdout.split()[-2:]
  assert int(n) > 0 and 'array_record' in fmt.lower()


def test_a_tilde_data_dir_is_expanded(tmp_path, monkeypatch):
  from emvgan_jax.data import splits  # pylint: disable=g-import-not-at-top

  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  monkeypatch.chdir(tmp_path)
  got = splits.load_dataset('emomv/c', data_dir='~/tfds', manual_dir=str(DUMMY))
  assert len(got['gallery']) > 0
  assert (tmp_path / 'home' / 'tfds' / 'emomv' / 'c').is_dir() and not (tmp_path / '~').exists()
