"""What a result records of where it came from (runtime/provenance.py), and that results.json carries it."""

import datetime
import importlib.metadata
import json
import re
import subprocess

import helpers
import jax
import pytest

import emvgan_jax
from emvgan_jax.runtime import provenance


def test_it_names_the_code_the_libraries_the_devices_the_date_and_the_data(monkeypatch, tmp_path):
  monkeypatch.setenv("DATA", str(tmp_path))
  record = provenance.collect(dataset="emomv/c", data_dir="$DATA/tfds", manual_dir=None)
  assert record["emvgan_jax"] == emvgan_jax.__version__
  head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=helpers.REPO_ROOT, capture_output=True, text=True)
  if head.returncode == 0:  # a git checkout (CI's is one)
    assert record["commit"] == head.stdout.strip() and isinstance(record["dirty"], bool)
  assert record["libraries"]["jax"] == importlib.metadata.version("jax") == jax.__version__
  assert record["libraries"]["flax"] == importlib.metadata.version("flax")
  assert record["devices"] == {"platform": "cpu", "kind": jax.devices()[0].device_kind, "count": 8, "processes": 1}
  assert abs(datetime.datetime.fromisoformat(record["date"]) - datetime.datetime.now(datetime.UTC)).seconds < 60
  assert record["data"] == {
    "dataset": "emomv/c",
    "version": "1.0.0",
    "data_dir": f"{tmp_path}/tfds",  # resolved, not as written
    "manual_dir": None,  # downloaded
  }
  json.dumps(record)  # it goes into results.json as it is


@pytest.mark.slow  # a trained run
def test_a_run_results_json_carries_it(tiny_run):
  results = json.loads((tiny_run.workdir / "results.json").read_text())
  record = results["provenance"]
  assert record["data"]["data_dir"] == tiny_run.data_dir
  assert record["data"]["manual_dir"].endswith("dummy_data")  # configs/tiny.py's, resolved
  assert re.fullmatch(r"[0-9a-f]{40}", record["commit"] or "0" * 40)
