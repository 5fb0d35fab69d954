"""Training: end to end over 8 devices on dummy data, sharded == single device, one compilation, resume ==
uninterrupted, non-finite losses, config errors, and a short real EmoMV-C run that beats chance."""

import dataclasses
import functools
import json
import os
import pathlib
import shutil
import subprocess
import sys

import helpers
import jax
import numpy as np
import optax
import pytest
from helpers import random_batch

from emvgan_jax import config_lib, families, train
from emvgan_jax.data import pipeline
from emvgan_jax.families import baseline as baseline_family
from emvgan_jax.families import emvgan as emvgan_family
from emvgan_jax.models import baseline as baseline_lib
from emvgan_jax.models import discriminator as discriminator_lib
from emvgan_jax.models import emvgan as emvgan_lib
from emvgan_jax.runtime import checkpoint as ckpt_lib
from emvgan_jax.runtime import sharding

REPO = helpers.REPO_ROOT


@pytest.fixture(scope="session")
def dummy_data_dir(tmp_path_factory) -> str:
  """One TFDS data dir for every dummy-data run of the session (built on first use)."""
  return str(tmp_path_factory.mktemp("tfds_dummy"))


def tiny_config(data_dir: str, arg: str = "emvgan", **overrides):
  config = config_lib.load_config_file(str(REPO / "configs" / "tiny.py") + f":{arg}")
  config.data.data_dir = data_dir
  for key, value in overrides.items():
    config_lib.set_field(config, key, value)
  return config


def read_jsonl(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


# --- end to end ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("arg", ["emvgan", "baseline"])
def test_tiny_train_and_evaluate_on_8_devices(tmp_path, dummy_data_dir, arg):
  assert jax.device_count() == 8
  workdir = tmp_path / "w"
  results = train.train_and_evaluate(tiny_config(dummy_data_dir, arg, **{"train.plots": True}), str(workdir))
  for name in ("training_curves", "precision_recall", "embedding_pca", "confusion_matrix"):
    assert (workdir / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

  on_disk = json.loads((workdir / "results.json").read_text())
  assert on_disk == json.loads(json.dumps(results))
  assert on_disk["dataset"] == "emomv/c" and on_disk["seed"] == 0
  assert on_disk["classification"]["split"] == "validation"
  assert set(on_disk["classification"]) >= {"accuracy", "f1", "roc_auc"}
  retrieval = on_disk["retrieval"]
  assert retrieval["split"] == "gallery" and retrieval["gallery_size"] == 4
  for direction in ("video_to_music", "music_to_video"):
    assert set(retrieval[direction]) == {
      "map",
      "hit@1",
      "hit@3",
      "hit@5",
      "hit@10",
      "recall@1",
      "recall@5",
      "recall@10",
      "median_rank",
      "mean_rank",
    }
  assert set(on_disk["chance"]["retrieval"]) == set(retrieval["video_to_music"])

  ckpts = ckpt_lib.Checkpoints(str(workdir), read_only=True)
  assert ckpts.latest_step("latest") == 4  # 4 epochs of one (padded) batch of the 6 dummy train rows
  assert ckpts.latest_step("best") == on_disk["checkpoint_step"]
  _, meta, stats = ckpts.restore_meta("best")
  assert stats["video_mean"].shape == (2304,) and meta["config"]["model"] == (
    "emvgan" if arg == "emvgan" else "baseline"
  )
  lines = read_jsonl(workdir / "metrics.jsonl")
  assert [x["step"] for x in lines if "train/loss" in x] == [1, 2, 3, 4]
  assert all(np.isfinite(x["train/loss"]) for x in lines if "train/loss" in x)
  assert len([x for x in lines if "pairs/loss" in x]) == 4
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir / "tensorboard"))
  assert json.loads((workdir / "config.json").read_text())["train"]["batch_size"] == 8


# --- sharded == single device; one compilation -----------------------------------------------------------------


def run_sharded(step_fn, state, batch, devices):
  """One step on a mesh of `devices`; SGD(1) makes the parameter change equal minus the gradient."""
  mesh = sharding.make_mesh(devices=devices)
  rep = sharding.replicated(mesh)
  state = jax.device_put(state, rep)
  gbatch = pipeline.make_global_batch(batch, sharding.batch_sharding(mesh))
  jitted = jax.jit(step_fn, in_shardings=(rep, sharding.batch_sharding(mesh), rep), out_shardings=(rep, rep))
  new_state, metrics = jitted(state, gbatch, jax.device_put(jax.random.key(3), rep))
  return jax.device_get(new_state), jax.device_get(metrics)


def emvgan_setup():
  config = config_lib.base_config()
  config.loss.learn_temperature = True
  gen = emvgan_lib.GeneratorSide(hidden=16, embed_dim=8, dropout_rate=0.1, valence_arousal=True)  # loss.w_va > 0
  disc = discriminator_lib.ModalityDiscriminator(hidden=16)
  sgd = optax.sgd(1.0)
  v, m = np.zeros((2, 12), np.float32), np.zeros((2, 7), np.float32)
  gen_side = {
    "generator": gen.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, v, m, train=False)["params"],
    "temperature": {"log_inv": np.float32(np.log(10.0))},
  }
  d_params = disc.init(jax.random.key(2), np.zeros((2, 8), np.float32))["params"]
  state = families.TrainState(
    step=np.int32(5),
    params={**gen_side, "discriminator": d_params},
    constants={},
    opt_state={"generator": sgd.init(gen_side), "discriminator": sgd.init(d_params)},
  )
  step_fn = functools.partial(
    emvgan_family.train_step, generator=gen, discriminator=disc, opt_g=sgd, opt_d=sgd, loss_cfg=config.loss, n_disc=2
  )
  return state, step_fn


def baseline_setup(task):
  model = baseline_lib.EmoMVBaseline(task=task, multitask=True, hidden=8, cbp_dim=4)
  sgd = optax.sgd(1.0)
  variables = dict(
    model.init(
      {"params": jax.random.key(0), "dropout": jax.random.key(1)},
      np.zeros((2, 12), np.float32),
      np.zeros((2, 7), np.float32),
      train=False,
    )
  )
  params = variables.pop("params")
  state = families.TrainState(
    step=np.int32(5), params={"model": params}, constants=variables, opt_state={"model": sgd.init(params)}
  )
  return state, functools.partial(baseline_family.train_step, model=model, optimizer=sgd, task=task, margin=1.0)


@pytest.mark.parametrize(
  "setup",
  [emvgan_setup, functools.partial(baseline_setup, "retrieval"), functools.partial(baseline_setup, "classification")],
  ids=["emvgan", "baseline_retrieval", "baseline_classification"],
)
@pytest.mark.slow
def test_sharded_step_equals_single_device(setup):
  state, step_fn = setup()
  batch = random_batch(16)
  one_state, one_metrics = run_sharded(step_fn, state, batch, jax.devices()[:1])
  all_state, all_metrics = run_sharded(step_fn, state, batch, jax.devices())
  assert set(one_metrics) == set(all_metrics)
  for k in one_metrics:
    np.testing.assert_allclose(all_metrics[k], one_metrics[k], rtol=2e-5, atol=1e-6, err_msg=k)
  # With SGD(lr=1) the parameter change is minus the gradient: compare gradients, leaf by leaf.
  grads_one = jax.tree.map(lambda new, old: old - new, one_state.params, state.params)
  grads_all = jax.tree.map(lambda new, old: old - new, all_state.params, state.params)
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(grads_one)) > 0
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads_all, grads_one)


@pytest.mark.slow
def test_train_step_compiles_once(dummy_data_dir):
  config = tiny_config(dummy_data_dir)
  family = families.build(config)
  mesh = sharding.make_mesh()
  state, abstract = train.create_state(family, config, mesh, 12, 7)
  shardings = sharding.shardings_of(abstract)
  step = train.compile_train_step(family, mesh, shardings)
  rng = jax.device_put(jax.random.key(0), sharding.replicated(mesh))
  for seed in range(3):
    state, metrics = step(
      state, pipeline.make_global_batch(random_batch(8, seed=seed), sharding.batch_sharding(mesh)), rng
    )
  jax.block_until_ready(metrics)
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert int(state.step) == 3


@pytest.mark.slow
def test_evaluation_splits_of_similar_sizes_share_one_program(dummy_data_dir):
  from emvgan_jax.data.splits import Split  # pylint: disable=g-import-not-at-top
  from emvgan_jax.evaluation import protocol  # pylint: disable=g-import-not-at-top

  config = tiny_config(dummy_data_dir)
  family = families.build(config)
  mesh = sharding.make_mesh()
  n_dev = mesh.devices.size
  state, _ = train.create_state(family, config, mesh, 12, 7)
  evaluator = protocol.Evaluator(family, mesh, batch_size=64 * n_dev)
  want = [max(n_dev, min(64 * n_dev, 1 << (n - 1).bit_length())) for n in (1, 9, 16, 17, 40, 10_000)]
  assert [evaluator.global_batch_rows(n) for n in (1, 9, 16, 17, 40, 10_000)] == want
  size = 64 * n_dev
  b = random_batch(size)
  split = Split(
    np.asarray([f"r{i}" for i in range(size)]),
    *(b[k] for k in ("video", "music", "match")),
    b["video_emotion"],
    b["music_emotion"],
  )
  whole = evaluator.predict(state, split)
  # Three sizes that a batch of the split's own size (rounded to the devices) would compile three programs for.
  for n in (size // 2 + n_dev + 1, size - n_dev, size):
    part = evaluator.predict(state, split.take(np.arange(n)))
    for k in protocol.PREDICT_KEYS:
      np.testing.assert_allclose(part[k], whole[k][:n], rtol=1e-6, atol=1e-7, err_msg=k)
  assert evaluator._predict._cache_size() == 1  # pylint: disable=protected-access


@pytest.mark.slow
def test_a_second_run_of_a_config_reuses_its_programs_and_trains_bit_for_bit_as_the_first(
  tmp_path, dummy_data_dir, monkeypatch
):
  """Runs of one config in one process (a sweep's) trace the train step once; the run that reuses it is the
  fresh run, bit for bit: metrics, results and final parameters."""
  traces = []
  build = families.build

  def counting_build(config):
    family = build(config)
    step = family.train_step
    return dataclasses.replace(family, train_step=lambda *a: traces.append(1) or step(*a))

  monkeypatch.setattr(families, "build", counting_build)
  train.clear_programs()
  config = tiny_config(dummy_data_dir, **{"train.max_steps": 4, "train.plots": False})
  fresh, reused = tmp_path / "fresh", tmp_path / "reused"
  train.train_and_evaluate(config, str(fresh))
  assert len(traces) == 1
  train.train_and_evaluate(config, str(reused))
  assert len(traces) == 1  # the second run called the step the first one compiled
  for name in ("metrics.jsonl", "results.json"):
    a, b = (
      read_jsonl(w / name) if name.endswith("l") else [json.loads((w / name).read_text())] for w in (fresh, reused)
    )
    for x, y in zip(a, b, strict=True):
      for key in set(x) - {"train/steps_per_sec", "train_seconds", "provenance"}:
        assert x[key] == y[key], (name, key)
  states = [ckpt_lib.Checkpoints(str(w), read_only=True).restore("latest", None)[1] for w in (fresh, reused)]
  jax.tree.map(np.testing.assert_array_equal, *states)
  train.clear_programs()


def test_programs_are_reused_only_by_runs_that_differ_in_their_seed_or_data(dummy_data_dir):
  mesh = sharding.make_mesh()
  key = train.program_key(tiny_config(dummy_data_dir), mesh)
  assert train.program_key(tiny_config(dummy_data_dir, seed=7, **{"data.holdout_seed": 3}), mesh) == key
  for field, value in (("train.accumulation_steps", 2), ("train.eval_batch_size", 8), ("optim.learning_rate", 0.5)):
    assert train.program_key(tiny_config(dummy_data_dir, **{field: value}), mesh) != key, field


# --- resume == uninterrupted -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, dummy_data_dir):
  base = {"train.num_epochs": 100, "train.checkpoint_every_epochs": 100}
  whole = tmp_path / "whole"
  train.train_and_evaluate(tiny_config(dummy_data_dir, **base, **{"train.max_steps": 6}), str(whole))
  parts = tmp_path / "parts"
  train.train_and_evaluate(tiny_config(dummy_data_dir, **base, **{"train.max_steps": 3}), str(parts))
  train.train_and_evaluate(tiny_config(dummy_data_dir, **base, **{"train.max_steps": 6}), str(parts))

  def latest(workdir):
    c = ckpt_lib.Checkpoints(str(workdir), read_only=True)
    abstract = None
    step, state, _, _ = c.restore("latest", abstract)
    return step, state

  (s1, st1), (s2, st2) = latest(whole), latest(parts)
  assert s1 == s2 == 6
  jax.tree.map(np.testing.assert_array_equal, st1, st2)
  train_lines = lambda w: {x["step"]: x for x in read_jsonl(w / "metrics.jsonl") if "train/loss" in x}  # noqa
  a, b = train_lines(whole), train_lines(parts)
  assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
  for step in a:
    for k in a[step]:
      if k != "train/steps_per_sec":
        assert a[step][k] == b[step][k], (step, k)
  eval_lines = lambda w: [
    (x["step"], x["pairs/loss"])
    for x in read_jsonl(w / "metrics.jsonl")  # noqa
    if "pairs/loss" in x
  ]
  assert eval_lines(whole) == eval_lines(parts)


# --- failures --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_non_finite_loss_stops_without_a_new_checkpoint(tmp_path, tiny_run):
  workdir = tmp_path / "w"
  shutil.copytree(tiny_run.workdir, workdir)  # a finished run of 4 epochs, checkpoints at steps 2 and 4
  before = sorted(p.name for p in (workdir / "checkpoints").rglob("*"))
  results_before = (workdir / "results.json").read_text()
  bad = tiny_config(tiny_run.data_dir, **{"train.num_epochs": 6, "optim.learning_rate": 1e30})
  # The public entry point refuses another config on this workdir (tests/test_faults.py); the loop beneath it is
  # what must not write a checkpoint once a loss goes non-finite.
  with pytest.raises(train.NonFiniteLossError, match=r"Non-finite loss at step \d+: .*wrote no checkpoint"):
    train._train_and_evaluate(bad, str(workdir))  # pylint: disable=protected-access
  assert sorted(p.name for p in (workdir / "checkpoints").rglob("*")) == before
  assert ckpt_lib.Checkpoints(str(workdir), read_only=True).latest_step() == 4
  assert (workdir / "results.json").read_text() == results_before


def run_main(*args, timeout=120):
  env = helpers.subprocess_env()
  return subprocess.run(
    [sys.executable, "-m", "emvgan_jax.main", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=timeout,
    env=env,
    check=False,
  )


@pytest.mark.parametrize(
  "flag, line",
  [
    (
      "--config.train.batchsize=3",
      "error: --config.train.batchsize: the config has no field 'batchsize'; did you mean 'batch_size'?",
    ),
    ("--config.trian.seed=3", "error: --config.trian.seed: the config has no field 'trian'; did you mean 'train'?"),
    ("--config.seed.x=1", "error: --config.seed.x: no such config field (\"Attribute <class 'int'>.x does not exist"),
  ],
)
@pytest.mark.slow
def test_misspelt_config_field_is_one_line_naming_the_flag(tmp_path, flag, line):
  proc = run_main("--config=configs/tiny.py", f"--workdir={tmp_path}", flag)
  (got,) = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and got.startswith(line)
  assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.slow
@pytest.mark.parametrize(
  "text, line",
  [
    ("def get_config(:\n", "error: the config file does not load: SyntaxError: invalid syntax ("),
    ("import no_such_module\n", "error: the config file does not load: ModuleNotFoundError: No module named"),
    ("def get_config():\n  raise ValueError('boom')\n", "error: the config file does not load: ValueError: boom"),
  ],
)
def test_a_config_file_that_does_not_load_is_one_line(tmp_path, text, line):
  (tmp_path / "bad.py").write_text(text)
  proc = run_main(f"--config={tmp_path / 'bad.py'}", f"--workdir={tmp_path / 'w'}")
  assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
  assert proc.stderr.startswith(line)


@pytest.mark.slow
def test_missing_config_file_is_one_line(tmp_path):
  proc = run_main("--config=configs/nope.py", f"--workdir={tmp_path}")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
    "error: --config=configs/nope.py: [Errno 2] No such file or directory: 'configs/nope.py'; give the path of a "
    f"config file, e.g. configs/emomv_c.py (looked up from {REPO}, then in the repository, {REPO})"
  ]


def test_unknown_model_fails_clearly(tmp_path, dummy_data_dir):
  config = tiny_config(dummy_data_dir, **{"model": "transformer"})
  with pytest.raises(
    ValueError, match=r"config.model must be one of \['baseline', 'emvgan', 'peer'\], got 'transformer'"
  ):
    train.train_and_evaluate(config, str(tmp_path))


# --- real data -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_short_emvgan_run_on_real_emomv_c_beats_chance(tmp_path, emomv_dir):
  """README's first command, shortened, on the real EmoMV-C files (one device: the run's own numbers are what is
  checked, and one process of one device runs it in a third of the time of eight)."""
  proc = run_main(
    "--config=configs/emomv_c.py",
    f"--workdir={tmp_path / 'w'}",
    f"--config.data.manual_dir={emomv_dir}",
    f"--config.data.data_dir={tmp_path / 'tfds'}",
    *("--config.train.num_epochs=15", "--config.train.patience=0", "--config.train.batch_size=128"),
    "--config.train.plots=False",  # the plots have tests of their own
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Retrieval on gallery (96 items)" in proc.stdout  # the table the README shows
  results = json.loads((tmp_path / "w" / "results.json").read_text())
  retrieval = results["retrieval"]
  assert retrieval["gallery_size"] == 96
  chance = results["chance"]["retrieval"]["map"]
  assert abs(chance - 0.279) < 0.001
  for direction in ("video_to_music", "music_to_video"):
    assert retrieval[direction]["map"] > chance + 0.03, (direction, retrieval[direction]["map"], chance)


@functools.cache  # the replicated reference serves both rules
def _two_steps(data_dir: str, rule: str, mesh_shape: tuple[tuple[str, int], ...]):
  """(metrics, parameters) after two tiny EMVGAN steps with parameters sharded by `rule` on a mesh of `mesh_shape`."""
  config = tiny_config(data_dir, **{"sharding.param_rule": rule, "sharding.min_shard_size": 64})
  mesh = sharding.make_mesh(dict(mesh_shape))
  family = families.build(config)
  state, abstract = train.create_state(family, config, mesh, 12, 7)
  shardings = sharding.shardings_of(abstract)
  if rule != "replicate":
    axis = "data" if rule == "fsdp" else "model"
    assert any(axis in tuple(s.spec) for s in jax.tree.leaves(shardings))  # something is really sharded
    kernel = state.params["generator"]["video_encoder"]
    assert any(len(leaf.addressable_shards[0].data.flatten()) < leaf.size for leaf in jax.tree.leaves(kernel))
  step = train.compile_train_step(family, mesh, shardings)
  rng = jax.jit(lambda: jax.random.key(0), out_shardings=sharding.replicated(mesh))()
  for seed in range(2):
    batch = pipeline.make_global_batch(random_batch(8, seed=seed), sharding.batch_sharding(mesh))
    state, metrics = step(state, batch, rng)
  return jax.device_get(metrics), jax.device_get(state.params)


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["fsdp", "tensor"])
def test_parameter_sharding_rules_give_the_same_step(dummy_data_dir, rule):
  """Parameters and Adam moments sharded by rule (ZeRO-3 style over `data`, or over `model`) == replicated."""
  m_rep, p_rep = _two_steps(dummy_data_dir, "replicate", (("data", -1), ("model", 1)))
  mesh_shape = (("data", -1), ("model", 1)) if rule == "fsdp" else (("data", 4), ("model", 2))
  m_sh, p_sh = _two_steps(dummy_data_dir, rule, mesh_shape)
  for k in m_rep:
    np.testing.assert_allclose(m_sh[k], m_rep[k], rtol=1e-4, atol=1e-6, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5), p_sh, p_rep)


@pytest.mark.slow
def test_published_rng_quirk_freezes_dropout_across_steps():
  """With the quirk, steps 5 and 6 draw the same dropout masks (same loss on the same params and batch)."""
  batch = random_batch(16)
  losses = {}
  for frozen in (False, True):
    state, _ = baseline_setup("retrieval")
    step_fn = functools.partial(
      baseline_family.train_step, **{**baseline_setup("retrieval")[1].keywords, "frozen_dropout": frozen}
    )
    out = []
    for step in (5, 6):
      _, metrics = jax.jit(step_fn)(state.replace(step=np.int32(step)), batch, jax.random.key(3))
      out.append(float(metrics["loss"]))
    losses[frozen] = out
  assert losses[True][0] == losses[True][1]
  assert losses[False][0] != losses[False][1]


def test_progress_bar_of_an_early_stopping_run_shows_the_selection_and_no_eta(tmp_path, capsys):
  from emvgan_jax.runtime import logger as logger_lib  # pylint: disable=g-import-not-at-top

  log = logger_lib.MetricLogger(
    str(tmp_path), enabled=True, log_every=1, total_steps=2000, initial_step=0, progress_bar=True, early_stopping=True
  )
  for step in (1, 2, 3):
    log.record_step(step, {"loss": jax.numpy.asarray(1.0 / step)}, epoch=0)
  log.show_selection(best_step=2, bad_evals=1, patience=20)
  log.close()
  err = capsys.readouterr().err
  assert "train: 3 steps (at most 2000)" in err and "best@2, 1/20 evals since" in err
  assert "%" not in err and "<" not in err  # no percentage, no remaining time


@pytest.mark.slow  # a fresh process
def test_the_logger_and_the_alignment_block_import_neither_torch_nor_scikit_learn(tmp_path):
  """Both would add seconds to every run's start (tensorboardX imports torch where it is installed)."""
  code = f"""
import importlib.util, sys
import numpy as np
from emvgan_jax.evaluation import alignment
from emvgan_jax.runtime import logger
log = logger.MetricLogger({str(tmp_path)!r}, enabled=True, log_every=1, total_steps=1, initial_step=0,
                          progress_bar=False)
log.write(1, {{"gallery/hit@1": 0.5}})
log.close()
rng = np.random.default_rng(0)
block = alignment.alignment_metrics(rng.normal(size=(20, 4)) + 1, rng.normal(size=(20, 4)), np.arange(20) % 5,
                                    class_names="abcde")
print(sorted(m for m in ("torch", "sklearn") if m in sys.modules), 0.5 <= block["modality_probe_accuracy"] <= 1)
if importlib.util.find_spec("torch") is not None:
    import torch  # hidden only during tensorboardX's import
"""
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
  assert out.stdout.split() == ["[]", "True"]


# --- TensorBoard ------------------------------------------------------------------------------------------------


def _read_events(folder: pathlib.Path) -> list:
  """Every Event of the TFRecord event files in `folder`, read with the framing unpacked by hand (length, CRC,
  payload, CRC) and the protos of tensorboardX, so the check does not go through the writer under test."""
  import struct  # pylint: disable=g-import-not-at-top

  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top

  events = []
  for path in sorted(folder.glob("events.out.tfevents.*")):
    data, i = path.read_bytes(), 0
    while i < len(data):
      (n,) = struct.unpack("<Q", data[i : i + 8])
      event = event_pb2.Event()
      event.ParseFromString(data[i + 12 : i + 12 + n])
      events.append(event)
      i += 12 + n + 4
  return events


@pytest.mark.slow
def test_tensorboard_tags_are_the_metric_keys_and_the_config_is_logged_as_hparams(tiny_run):
  from tensorboardX.proto import plugin_hparams_pb2  # pylint: disable=g-import-not-at-top

  events = _read_events(tiny_run.workdir / "tensorboard")
  scalars = {(v.tag, e.step) for e in events for v in e.summary.value if v.HasField("simple_value")}
  rows = [json.loads(line) for line in (tiny_run.workdir / "metrics.jsonl").read_text().splitlines()]
  expected = {(k, r["step"]) for r in rows for k in r if k != "step"}
  assert scalars == expected and any("@" in tag for tag, _ in scalars)
  plugin = {
    v.tag: v.metadata.plugin_data.content
    for e in events
    for v in e.summary.value
    if v.metadata.plugin_data.plugin_name == "hparams"
  }
  start = plugin_hparams_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"]).session_start_info
  config = json.loads((tiny_run.workdir / "config.json").read_text())
  assert os.path.isabs(config["data"]["manual_dir"]) and os.path.isdir(config["data"]["manual_dir"])
  assert start.hparams["seed"].number_value == config["seed"]
  assert start.hparams["train.selection_metric"].string_value == config["train"]["selection_metric"]
  assert start.hparams["emvgan.embed_dim"].number_value == config["emvgan"]["embed_dim"]
  experiment = plugin_hparams_pb2.HParamsPluginData.FromString(plugin["_hparams_/experiment"]).experiment
  assert config["train"]["selection_metric"] in {m.name.tag for m in experiment.metric_infos}
  end = plugin_hparams_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_end_info"]).session_end_info
  assert end.status == 1  # STATUS_SUCCESS
