"""Tests of tfds_emomv.emomv.files: reading and validating one EmoMV CSV and its two HDF5 files."""

import csv
import pathlib
import shutil

import h5py
import numpy as np
import pytest

from tfds_emomv.emomv import files

DUMMY = pathlib.Path(files.__file__).resolve().parent / 'dummy_data'


def _write_h5(path, key, array):
  with h5py.File(path, 'w') as f:
    f.create_dataset(key, data=array)


def _write_csv(path, rows, lineterminator='\n', encoding='utf-8'):
  with open(path, 'w', newline='', encoding=encoding) as f:
    csv.writer(f, lineterminator=lineterminator).writerows(rows)


def _pair_rows(n):
  """n valid 7-column rows, alternating matched (exciting) and mismatched: `aK_PAIR_bK` (relax video, tense music),
  then its swap `bK_PAIR_aK` (tense video, relax music)."""
  rows = []
  for i in range(n):
    if i % 2 == 0:
      rows.append(['d/', f'seg{i}', '1', 'Exciting', 'exciting', '0', '0'])
    elif i % 4 == 1:
      rows.append(['d/', f'a{i}_PAIR_b{i}', '0', 'relax', 'TENSE', '4', '2'])
    else:
      rows.append(['d/', f'b{i - 2}_PAIR_a{i - 2}', '0', 'tense', 'Relax', '2', '4'])
  return rows


@pytest.fixture
def small_pairs(tmp_path):
  """A valid 4-row pair split with small widths (6 / 3), read with video_dim=6, music_dim=3."""
  rng = np.random.default_rng(0)
  _write_csv(tmp_path / 'p.csv', _pair_rows(4))
  _write_h5(tmp_path / 'v.h5', 'default', rng.random((4, 6), dtype=np.float32))
  _write_h5(tmp_path / 'm.h5', 'data', rng.random((4, 3), dtype=np.float32))
  return tmp_path / 'p.csv', tmp_path / 'v.h5', tmp_path / 'm.h5'


def _read_small(paths):
  return files.read_pairs(*paths, video_dim=6, music_dim=3)


# --- the split table -------------------------------------------------------------------------------------------


def test_split_table():
  assert files.splits('a') == ('train', 'validation', 'test', 'gallery')
  assert files.splits('b') == ('train', 'validation', 'gallery')
  assert files.splits('c') == ('train', 'validation', 'gallery')
  c_val = files.split_files('c', 'validation')
  assert c_val.paths == (
    'DS3_EmoMV_C/annotation/DS3_VAL_MATCH_MISMATCH_labels.csv',
    'DS3_EmoMV_C/extracted_features/SlowFast_DS3_VAL_MATCH_MISMATCH.h5',
    'DS3_EmoMV_C/extracted_features/VGGish_DS3_VAL_MATCH_MISMATCH.h5',
  )
  assert files.split_files('a', 'gallery').csv == (
    'DS1_EmoMV_A/for_retrieval/DS1_from_MVED_test_set_5_classes_for_retrieval.csv'
  )
  assert files.split_files('b', 'gallery').kind == 'gallery'
  assert files.url_for(c_val.csv) == (
    'https://github.com/ivyha010/EmoMV/raw/main/DS3_EmoMV_C/annotation/DS3_VAL_MATCH_MISMATCH_labels.csv'
  )
  with pytest.raises(KeyError, match='no split'):
    files.split_files('c', 'test')
  with pytest.raises(KeyError, match='unknown EmoMV config'):
    files.splits('d')


def test_dummy_data_has_every_file():
  for config in files.CONFIG_FOLDERS:
    assert files.find_missing(DUMMY, config) == []
  assert len(files.config_files('a')) == 12 and len(files.config_files('c')) == 9


# --- read_features -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize('key', ['default', 'data', 'some/group/other'])
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_read_features_any_single_key_and_float64(tmp_path, key, dtype):
  array = np.arange(12, dtype=dtype).reshape(3, 4) / 7
  _write_h5(tmp_path / 'f.h5', key, array)
  out = files.read_features(tmp_path / 'f.h5', dim=4)
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, array.astype(np.float32))


def test_features_marked_as_made_with_random_weights_are_refused_unless_allowed(tmp_path, monkeypatch):
  path = tmp_path / 'v.h5'
  with h5py.File(path, 'w') as f:
    f.create_dataset('data', data=np.ones((2, 128), np.float32))
    f.attrs.update({'extractor': 'VGGish', 'weights': 'random'})
  monkeypatch.setenv('EMVGAN_ALLOW_RANDOM_FEATURES', '0')
  with pytest.raises(files.EmoMVFormatError, match=r'v\.h5: made by emvgan-extract with random VGGish weights'):
    files.read_features(path)
  monkeypatch.setenv('EMVGAN_ALLOW_RANDOM_FEATURES', '1')
  assert files.read_features(path).shape == (2, 128)
  with h5py.File(path, 'a') as f:
    f.attrs['weights'] = 'published'
  monkeypatch.setenv('EMVGAN_ALLOW_RANDOM_FEATURES', '0')
  assert files.read_features(path).shape == (2, 128)


def test_read_features_errors(tmp_path):
  with pytest.raises(files.EmoMVMissingFileError, match='nope.h5'):
    files.read_features(tmp_path / 'nope.h5')
  # A known repository path also gets its download URL.
  with pytest.raises(files.EmoMVMissingFileError, match='raw/main/DS3_EmoMV_C/for_retrieval/VGGish_DS3_VAL'):
    files.read_features(tmp_path / 'DS3_EmoMV_C/for_retrieval/VGGish_DS3_VAL_for_retrieval.h5')

  _write_h5(tmp_path / 'w.h5', 'data', np.zeros((2, 5), np.float32))
  with pytest.raises(files.EmoMVFormatError, match=r'w\.h5: features are 5 wide, expected 128'):
    files.read_features(tmp_path / 'w.h5', dim=128)
  assert files.read_features(tmp_path / 'w.h5').shape == (2, 5)

  bad = np.zeros((3, 4), np.float32)
  bad[1, 2] = np.inf
  _write_h5(tmp_path / 'inf.h5', 'data', bad)
  with pytest.raises(files.EmoMVFormatError, match=r'inf\.h5: row 2, column 3: non-finite'):
    files.read_features(tmp_path / 'inf.h5')

  # Finite in float64 but not in float32.
  _write_h5(tmp_path / 'big.h5', 'data', np.full((1, 2), 1e300))
  with pytest.raises(files.EmoMVFormatError, match='row 1, column 1: non-finite'):
    files.read_features(tmp_path / 'big.h5')

  with h5py.File(tmp_path / 'two.h5', 'w') as f:
    f['default'] = np.zeros((1, 2))
    f['data'] = np.zeros((1, 2))
  with pytest.raises(files.EmoMVFormatError, match='exactly one HDF5 dataset'):
    files.read_features(tmp_path / 'two.h5')

  _write_h5(tmp_path / 'one_d.h5', 'data', np.zeros(3))
  with pytest.raises(files.EmoMVFormatError, match=r'shape \(3,\)'):
    files.read_features(tmp_path / 'one_d.h5')

  (tmp_path / 'text.h5').write_text('not hdf5')
  with pytest.raises(files.EmoMVFormatError, match='not a readable HDF5 file'):
    files.read_features(tmp_path / 'text.h5')


# --- read_pairs --------------------------------------------------------------------------------------------------


def test_read_pairs_values(small_pairs):
  out = _read_small(small_pairs)
  assert out['name'].tolist() == ['seg0', 'a1_PAIR_b1', 'seg2', 'b1_PAIR_a1']
  assert out['match'].tolist() == [1, 0, 1, 0]
  assert out['video_emotion'].tolist() == [0, 4, 0, 2]
  assert out['music_emotion'].tolist() == [0, 2, 0, 4]
  for key in ('match', 'video_emotion', 'music_emotion'):
    assert out[key].dtype == np.int64
  assert out['video'].shape == (4, 6) and out['music'].shape == (4, 3)
  with h5py.File(small_pairs[1]) as f:
    np.testing.assert_array_equal(out['video'], f['default'][()])


def test_read_pairs_default_widths_reject_small_features(small_pairs):
  with pytest.raises(files.EmoMVFormatError, match=r'v\.h5: features are 6 wide, expected 2304'):
    files.read_pairs(*small_pairs)
  out = files.read_pairs(*small_pairs, video_dim=None, music_dim=None)
  assert out['video'].shape == (4, 6)


def test_read_pairs_tolerates_crlf_bom_and_trailing_blank_lines(small_pairs):
  csv_path = small_pairs[0]
  text = csv_path.read_text()
  csv_path.write_bytes(b'\xef\xbb\xbf' + text.replace('\n', '\r\n').encode() + b'\r\n\r\n')
  assert _read_small(small_pairs)['name'][0] == 'seg0'


# (row index to change, column index, new value or None to drop the column, expected message regex)
_BAD_PAIR_ROWS = [
  (1, 6, None, r'row 2 has 6 columns, expected 7'),
  (2, 2, 'yes', r"row 3, column 3 \(match\): 'yes' is not an integer"),
  (0, 2, '2', r'row 1, column 3 \(match\): 2, expected 0 \(mismatched\) or 1 \(matched\)'),
  (3, 5, '5', r'row 4, column 6 \(video_emotion_id\): 5 is outside 0..4'),
  (3, 6, '-1', r'row 4, column 7 \(music_emotion_id\): -1 is outside 0..4'),
  (0, 3, 'Sad', r"row 1, column 4 \(video_emotion\): emotion 'Sad' disagrees with its id 0 \(exciting\)"),
  (1, 4, 'happy', r"row 2, column 5 \(music_emotion\): unknown emotion 'happy'"),
  (1, 5, '4.0', r"row 2, column 6 \(video_emotion_id\): '4.0' is not an integer"),
  (2, 1, ' ', r'row 3, column 2 \(name\) is empty'),
]


@pytest.mark.parametrize('row, column, value, message', _BAD_PAIR_ROWS)
def test_read_pairs_bad_rows(small_pairs, row, column, value, message):
  rows = _pair_rows(4)
  if value is None:
    del rows[row][column]
  else:
    rows[row][column] = value
  _write_csv(small_pairs[0], rows)
  with pytest.raises(files.EmoMVFormatError, match=r'p\.csv: ' + message):
    _read_small(small_pairs)


def test_read_pairs_row_count_mismatch(small_pairs):
  _write_csv(small_pairs[0], _pair_rows(5))
  with pytest.raises(files.EmoMVFormatError, match=r'v\.h5: 4 feature rows, but .*p\.csv has 5 rows'):
    _read_small(small_pairs)


def test_read_pairs_blank_line_inside(small_pairs):
  lines = small_pairs[0].read_text().splitlines()
  small_pairs[0].write_text('\n'.join(lines[:2] + [''] + lines[2:]) + '\n')
  with pytest.raises(files.EmoMVFormatError, match='row 3 is empty'):
    _read_small(small_pairs)


def test_read_pairs_missing_and_empty_csv(small_pairs, tmp_path):
  with pytest.raises(files.EmoMVMissingFileError, match='absent.csv'):
    files.read_pairs(tmp_path / 'absent.csv', *small_pairs[1:])
  small_pairs[0].write_text('\n\n')
  with pytest.raises(files.EmoMVFormatError, match='no rows'):
    _read_small(small_pairs)


# --- read_gallery ------------------------------------------------------------------------------------------------


def _gallery(tmp_path, rows, music_dtype=np.float32):
  n = len(rows)
  _write_csv(tmp_path / 'g.csv', rows)
  _write_h5(tmp_path / 'gv.h5', 'default', np.ones((n, 6), np.float32))
  _write_h5(tmp_path / 'gm.h5', 'data', np.ones((n, 3), music_dtype))
  return files.read_gallery(tmp_path / 'g.csv', tmp_path / 'gv.h5', tmp_path / 'gm.h5', video_dim=6, music_dim=3)


def test_read_gallery_three_columns(tmp_path):
  out = _gallery(
    tmp_path,
    [
      ['Dataset1/for_retrieval/TEST_MVED/Excited/video', 'ORG_EXT(1).mp4', '0'],
      ['Dataset1/for_retrieval/TEST_MVED/Fear/video', 'ORG_EXT(1).mp4', '1'],
      ['Dataset1/for_retrieval/TEST_MVED/Relaxation/video', 'TT(5).mp4', '4'],
    ],
    music_dtype=np.float64,
  )
  # The same bare file name in two class folders gets two distinct names, as the pair CSVs name segments.
  assert out['name'].tolist() == ['exciting_ORG_EXT(1)', 'fear_ORG_EXT(1)', 'relax_TT(5)']
  assert out['video_emotion'].tolist() == out['music_emotion'].tolist() == [0, 1, 4]
  assert out['match'].tolist() == [1, 1, 1]
  assert out['music'].dtype == np.float32


def test_read_gallery_four_columns(tmp_path):
  out = _gallery(tmp_path, [['d/', 'yA9_06', 'Exciting', '0'], ['d/', 'zz_01', 'sad', '3']])
  assert out['name'].tolist() == ['yA9_06', 'zz_01']
  assert out['video_emotion'].tolist() == [0, 3]
  assert out['music_emotion'].tolist() == [0, 3]


@pytest.mark.parametrize(
  'rows, message',
  [
    ([['d/', 'a', 'sad', '3'], ['d/', 'b', '3']], r'row 2 has 3 columns, expected 4 like row 1'),
    ([['d/', 'a', 'x', 'sad', '3']], r'row 1 has 5 columns, expected 3 .* or 4'),
    ([['d/', 'a', 'sad', '3'], ['d/', 'a', 'sad', '3']], r"row 2: gallery name 'a' repeats row 1"),
    ([['d/', 'a.mp4', '2'], ['e/', 'a.mp4', '2']], r"row 2: gallery name 'tense_a' repeats row 1"),
    ([['d/', 'a', 'relax', '3']], r"row 1, column 3 \(emotion\): emotion 'relax' disagrees with its id 3"),
    ([['d/', 'a.mp4', '7']], r'row 1, column 3 \(label_id\): 7 is outside 0..4'),
    ([['d/', 'a.mp4', 'sad']], r"row 1, column 3 \(label_id\): 'sad' is not an integer"),
  ],
)
def test_read_gallery_errors(tmp_path, rows, message):
  with pytest.raises(files.EmoMVFormatError, match=r'g\.csv: ' + message):
    _gallery(tmp_path, rows)


def test_read_split_names_all_missing_files_with_urls(tmp_path):
  shutil.copytree(DUMMY / 'DS2_EmoMV_B', tmp_path / 'DS2_EmoMV_B')
  gone = files.split_files('b', 'gallery')
  (tmp_path / gone.video).unlink()
  (tmp_path / gone.music).unlink()
  with pytest.raises(files.EmoMVMissingFileError) as info:
    files.read_split(tmp_path, 'b', 'gallery')
  message = str(info.value)
  assert '2 EmoMV file(s) missing' in message
  for rel in (gone.video, gone.music):
    assert f'{rel} (download: {files.url_for(rel)})' in message
  assert files.read_split(tmp_path, 'b', 'train')['video'].shape == (4, 2304)
