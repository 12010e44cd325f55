"""Training: kill-and-resume continues exactly, fine-tuning starts from the parent's weights,
two gloo processes under torchrun end with identical weights, bad datasets are refused."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from BoneSegmentationLib.cli import main
from BoneSegmentationLib.model.modelfile import load_model, read_metadata

from conftest import make_random_model

TINY = ["--patch", "32", "--width", "4", "--levels", "3", "--spacing", "6", "--validate-every", "1000",
        "--threads", "1", "-q"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dataset")
    assert main(["phantom", "-o", str(folder), "--dataset", "--count", "2", "--seed", "60", "--spacing", "6"]) == 0
    return folder


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "BoneSegmentationLib", *args]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=False)["model"]


def test_kill_and_resume_continues_exactly(dataset, tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert main(["train", str(dataset), "-o", str(reference), "--iterations", "12", "--checkpoint-every", "4", *TINY]) == 0

    proc = subprocess.Popen(_cli("train", str(dataset), "-o", str(killed), "--iterations", "1000",
                                 "--checkpoint-every", "4", *TINY), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(killed / "checkpoint.pt", weights_only=False)["iteration"]
    assert 4 <= saved < 12
    logged_before = len((killed / "history.jsonl").read_text().splitlines())
    assert logged_before >= saved

    assert main(["train", str(dataset), "-o", str(killed), "--iterations", "12", "--checkpoint-every", "4", *TINY]) == 0
    records = [json.loads(line) for line in (killed / "history.jsonl").read_text().splitlines()]
    resumed = [r["iteration"] for r in records[logged_before:]]
    assert resumed == list(range(saved + 1, 13)), "the resumed run starts right after the last checkpoint"
    a, b = _weights(reference), _weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), \
        "killed + resumed must end with the same weights as an uninterrupted run"
    assert load_model(killed / "bones-model.pt").metadata["training"]["iterations"] == 12


def test_fine_tuning_starts_from_the_parent(dataset, tmp_path):
    parent = make_random_model(tmp_path / "parent.pt", base_features=4, levels=3, patch=32, spacing=6.0, seed=3)
    parent_weights = load_model(parent).module.state_dict()
    assert main(["train", str(dataset), "-o", str(tmp_path / "zero"), "--init", str(parent), "--iterations", "0",
                 "-q"]) == 0
    exported = load_model(tmp_path / "zero" / "bones-model.pt").module.state_dict()
    assert all(torch.equal(parent_weights[k], exported[k]) for k in parent_weights)

    assert main(["train", str(dataset), "-o", str(tmp_path / "tuned"), "--init", str(parent), "--iterations", "3",
                 "--threads", "1", "-q"]) == 0
    meta = read_metadata(tmp_path / "tuned" / "bones-model.pt")
    parent_meta = read_metadata(parent)
    assert meta["training"]["parent_model"] == (f"{parent_meta['name']} {parent_meta['version']} "
                                                f"(sha256 {hashlib.sha256(parent.read_bytes()).hexdigest()[:12]})")
    assert meta["spacing_mm"] == [6.0, 6.0, 6.0]
    tuned = load_model(tmp_path / "tuned" / "bones-model.pt").module.state_dict()
    moved = max(float((tuned[k] - parent_weights[k]).abs().max()) for k in parent_weights)
    assert 0 < moved < 0.05, "three Adam steps at lr 1e-3 move weights a little from the parent's"


def test_fine_tuning_refuses_a_different_architecture(dataset, tmp_path, capsys):
    parent = make_random_model(tmp_path / "parent.pt", base_features=4, levels=3, patch=32, spacing=6.0)
    assert main(["train", str(dataset), "-o", str(tmp_path / "x"), "--init", str(parent), "--width", "8"]) == 2
    assert "drop --width" in capsys.readouterr().err


def test_two_gloo_processes_end_with_identical_weights(dataset, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "BoneSegmentationLib", "train", str(dataset), "-o", str(out), "--iterations", "3", *TINY]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    digests = records[-1]["ranks_weights_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert [r["iteration"] for r in records[:-1]] == [1, 2, 3]
    assert (out / "bones-model.pt").is_file()


def test_dataset_with_another_class_table_is_refused(dataset, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for sub in ("imagesTr", "labelsTr"):
        os.symlink(dataset / sub, bad / sub)
    meta = json.loads((dataset / "dataset.json").read_text())
    meta["labels"]["femur_left"], meta["labels"]["femur_right"] = meta["labels"]["femur_right"], meta["labels"]["femur_left"]
    (bad / "dataset.json").write_text(json.dumps(meta))
    assert main(["train", str(bad), "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "class table differs" in err and "femur_left" in err
    assert not (tmp_path / "run").exists()


def test_a_stopped_runs_best_weights_export_as_the_finished_run_does(dataset, tmp_path):
    from BoneSegmentationLib.training.train import TrainConfig, export_best, load_checkpoint, resume_state

    run = tmp_path / "run"
    assert main(["train", str(dataset), "-o", str(run), "--iterations", "4", "--checkpoint-every", "2",
                 *TINY[:-5], "--validate-every", "2", "--threads", "1", "-q"]) == 0
    cfg = TrainConfig(**load_checkpoint(run / "checkpoint.pt", torch.device("cpu"))["config"])
    net, best, history = resume_state(cfg)
    assert any("val_dice" in r for r in history) and (run / "best.pt").is_file()
    for r in (r for r in history if "val_dice" in r):  # the mean of the per-case figures the history keeps
        assert r["val_cases"] and abs(sum(r["val_cases"].values()) / len(r["val_cases"]) - r["val_dice"]) < 1e-4
    candidate = export_best(net, cfg, best, history, tmp_path / "candidate.pt")
    finished, exported = load_model(run / "bones-model.pt"), load_model(candidate)
    a, b = finished.module.state_dict(), exported.module.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "both export best.pt's weights"
    best_weights = load_checkpoint(run / "best.pt", torch.device("cpu"))
    assert all(torch.equal(best_weights[k], b[k]) for k in best_weights), "the candidate holds best.pt itself"
    assert exported.metadata["training"]["best_iteration"] == finished.metadata["training"]["best_iteration"]
    assert exported.metadata["training"]["best_validation_dice"] == round(best, 4)


def test_a_run_resumes_only_with_the_preprocessing_it_started_with(dataset, tmp_path):
    """Weights trained on unsmoothed cases are not continued on smoothed ones (or back)."""
    import dataclasses

    from BoneSegmentationLib.core.errors import BoneSegmentationError
    from BoneSegmentationLib.training.train import TrainConfig, load_checkpoint, resume_state

    run = tmp_path / "run"
    assert main(["train", str(dataset), "-o", str(run), "--iterations", "2", "--checkpoint-every", "2",
                 *TINY[:-5], "--threads", "1", "-q"]) == 0
    cfg = TrainConfig(**load_checkpoint(run / "checkpoint.pt", torch.device("cpu"))["config"])
    assert cfg.antialias is False
    resume_state(cfg)  # the same settings resume
    with pytest.raises(BoneSegmentationError, match="'antialias': False.*resume with the same settings"):
        resume_state(dataclasses.replace(cfg, antialias=True))


def test_exporting_a_run_that_never_started_says_so(tmp_path):
    from BoneSegmentationLib.core.errors import BoneSegmentationError
    from BoneSegmentationLib.training.train import TrainConfig, resume_state

    with pytest.raises(BoneSegmentationError, match="no run to export from"):
        resume_state(TrainConfig(out_dir=str(tmp_path / "nothing")))


TOOL = Path(__file__).resolve().parents[1] / "tools" / "train_real_ct_model.py"
REFUSALS = [(["--stop-after", "0"], "--stop-after must be a positive number of minutes"),
            (["--stop-after", "nan"], "--stop-after must be a positive number of minutes")]
if not torch.cuda.is_available():
    REFUSALS.append((["--device", "cuda"], "PyTorch sees no CUDA GPU here"))


@pytest.mark.parametrize("args, message", REFUSALS)
def test_real_ct_tool_refuses_a_bad_time_limit_or_a_missing_gpu_before_writing(tmp_path, args, message):
    """The time limit of tools/device_train.sh and the device are checked before any synthesis."""
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(TOOL), "--out", str(run), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert not run.exists()


def test_short_views_train_and_are_recorded_in_the_model(tmp_path):
    """A run with every patch seen as a short scan trains, and its model says so (metadata
    training.augmentation), as the faded bone cores are said."""
    import numpy as np
    from BoneSegmentationLib.training.train import Case, TrainConfig, train
    rng = np.random.default_rng(0)
    labels = np.zeros((40, 24, 24), np.uint8)
    labels[:, 8:16, 8:16] = 30  # a column of bone head to foot
    cases = [Case(f"c{i}", (rng.normal(size=labels.shape) * 0.05 + 0.4 * (labels > 0)).astype(np.float32), labels)
             for i in range(2)]
    cfg = TrainConfig(out_dir=str(tmp_path), spacing=4.0, patch=16, width=4, levels=3, iterations=3,
                      validate_every=1000, short_view_share=1.0, bone_fade_share=0.5, device="cpu")
    path = train(cfg, cases, [])
    augmentation = read_metadata(path)["training"]["augmentation"]
    assert "short views: 24-96 mm" in augmentation and "(p 1)" in augmentation and "bone cores" in augmentation


def test_extra_cases_take_an_earlier_runs_anatomy_training_images_only(tmp_path, monkeypatch):
    """``--extra-cases``: the anatomy images (seeds 2001.., crops 2501..) another run cached, read
    as training cases; its validation images and phantoms are not taken, and a folder without
    anatomy images (or prepared the other way) is refused with what to give instead."""
    import importlib.util
    import numpy as np
    monkeypatch.syspath_prepend(str(TOOL.parent))  # as when run: the tools import each other
    spec = importlib.util.spec_from_file_location("train_real_ct_model", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cache = tmp_path / "realct9" / "cases-antialiased"
    cache.mkdir(parents=True)
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[2:6, 2:6, 2:6] = 30
    labelled = np.zeros(126, bool)
    labelled[[0, 30]] = True
    for name in ("anatomy_2001", "anatomy_crop_2501", "anatomy_1990", "phantom_real_1001"):
        np.savez_compressed(cache / f"{name}.npz", image=labels.astype(np.float32), labels=labels, labelled=labelled)
    cases = tool.extra_cases([str(tmp_path / "realct9")], True, [1990])
    assert [c.name for c in cases] == ["realct9/anatomy_2001", "realct9/anatomy_crop_2501"]
    assert all(c.group == "anatomy" and c.labelled is not None and c.labelled[30] for c in cases)
    assert np.array_equal(cases[0].labels, labels)
    with pytest.raises(SystemExit, match="no anatomy images"):
        tool.extra_cases([str(tmp_path / "realct9")], False, [1990])  # cached with --antialias only


@pytest.mark.parametrize("hostile", ["pickled", "truncated", "mismatched"])
def test_extra_cases_refuse_a_hostile_or_broken_cached_case_in_one_line(tmp_path, hostile, monkeypatch):
    """A cached case from another folder is untrusted: a pickled object is never unpickled (nothing
    runs), a truncated file and labels that do not fit the image are refused with what to do."""
    import importlib.util
    import numpy as np
    monkeypatch.syspath_prepend(str(TOOL.parent))  # as when run: the tools import each other
    spec = importlib.util.spec_from_file_location("train_real_ct_model", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cache = tmp_path / "run" / "cases-antialiased"
    cache.mkdir(parents=True)
    path = cache / "anatomy_2001.npz"
    labels = np.zeros((8, 8, 8), np.uint8)
    labelled = np.ones(126, bool)
    marker = tmp_path / "ran"
    if hostile == "pickled":  # an object array whose unpickling would create a file
        class Payload:
            def __reduce__(self):
                return (open, (str(marker), "w"))
        np.savez(path, image=np.array([Payload()], dtype=object), labels=labels, labelled=labelled)
    elif hostile == "truncated":
        np.savez_compressed(path, image=labels.astype(np.float32), labels=labels, labelled=labelled)
        path.write_bytes(path.read_bytes()[:100])
    else:
        np.savez_compressed(path, image=np.zeros((8, 8, 9), np.float32), labels=labels, labelled=labelled)
    with pytest.raises(SystemExit, match="anatomy_2001.npz is not a (readable cached case|cached case of this project)"):
        tool.extra_cases([str(tmp_path / "run")], True, [1990])
    assert not marker.exists(), "nothing in the file ran"


def bar_cases():
    """Two small noisy cases of one bright bar labelled as one bone: enough for a few fine-tuning steps."""
    import numpy as np
    from BoneSegmentationLib.training.train import Case

    rng = np.random.default_rng(0)
    labels = np.zeros((40, 24, 24), np.uint8)
    labels[:, 8:16, 8:16] = 30
    return [Case(f"c{i}", (rng.normal(size=labels.shape) * 0.05 + 0.4 * (labels > 0)).astype(np.float32), labels)
            for i in range(2)]


def test_the_parent_term_is_zero_at_the_parent_and_holds_a_fine_tune_nearer_to_it(tmp_path):
    """``parent_weight``: KL(parent || network) is 0 where the network gives the parent's output,
    positive elsewhere, and its gradient reaches only the network. The same fine-tune (same seed,
    cases and steps) with the term ends nearer the parent's output than without it. It needs a
    parent, and a run resumes only with the weight it started with."""
    import dataclasses

    from BoneSegmentationLib.core.errors import BoneSegmentationError
    from BoneSegmentationLib.training.losses import parent_kl
    from BoneSegmentationLib.training.train import TrainConfig, resume_state, train

    torch.manual_seed(0)
    parent_logits = torch.randn(1, 5, 4, 4, 4)
    assert float(parent_kl(parent_logits.clone(), parent_logits)) == pytest.approx(0.0, abs=1e-6)
    ours = (parent_logits + torch.randn_like(parent_logits)).requires_grad_(True)
    parent_copy = parent_logits.clone().requires_grad_(True)
    term = parent_kl(ours, parent_copy)
    term.backward()
    assert term.item() > 0 and ours.grad.abs().sum() > 0 and parent_copy.grad is None

    parent = make_random_model(tmp_path / "parent.pt", spacing=4.0, base_features=4, levels=3, patch=16)
    cases = bar_cases()
    x = torch.from_numpy(cases[0].image[:16, 4:20, 4:20].copy())[None, None]
    with torch.no_grad():
        reference = load_model(parent).module(x)
    distance = {}
    for weight in (0.0, 5.0):
        cfg = TrainConfig(out_dir=str(tmp_path / f"run{weight}"), spacing=4.0, patch=16, width=4, levels=3,
                          iterations=6, validate_every=1000, checkpoint_every=6, device="cpu", init_model=str(parent),
                          lr=1e-2, augment=False, parent_weight=weight)
        net = load_model(train(cfg, cases, [])).module
        with torch.no_grad():
            distance[weight] = float(parent_kl(net(x), reference))
    assert 0 < distance[5.0] < distance[0.0], distance
    with pytest.raises(BoneSegmentationError, match="'parent_weight': 5.0.*resume with the same settings"):
        resume_state(dataclasses.replace(cfg, parent_weight=1.0))
    with pytest.raises(BoneSegmentationError, match="parent_weight needs a parent model"):
        train(dataclasses.replace(cfg, out_dir=str(tmp_path / "orphan"), init_model=""), cases, [])


def test_a_run_that_trains_only_some_stages_leaves_the_others_as_the_parents(tmp_path):
    """``train_only``: the named stages learn, every other weight stays the parent's bit for bit
    (instance norms' affine parameters included); a prefix naming no stage is refused listing the
    stages, and a run resumes only with the stages it started with."""
    import dataclasses

    from BoneSegmentationLib.core.errors import BoneSegmentationError
    from BoneSegmentationLib.training.train import TrainConfig, resume_state, train

    parent = make_random_model(tmp_path / "parent.pt", spacing=4.0, base_features=4, levels=3, patch=16)
    cases = bar_cases()
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), spacing=4.0, patch=16, width=4, levels=3, iterations=3,
                      validate_every=1000, checkpoint_every=3, device="cpu", init_model=str(parent), lr=1e-2,
                      train_only=("encoders.0", "classifier"))
    train(cfg, cases, [])
    before = load_model(parent).module.state_dict()
    after = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"]
    learnt = {k for k in before if not torch.equal(before[k], after[k])}
    assert learnt and all(k.startswith(("encoders.0.", "classifier.")) for k in learnt)
    assert any(k.startswith("encoders.0.") for k in learnt) and "classifier.weight" in learnt
    with pytest.raises(BoneSegmentationError, match=r"train_only names no parameter: encoder\.0; the network's "
                                                    r"stages are .*encoders\.0.*decoders\.1.*classifier"):
        train(dataclasses.replace(cfg, out_dir=str(tmp_path / "other"), train_only=("encoder.0",)), cases, [])
    with pytest.raises(BoneSegmentationError, match="'train_only': \\('encoders.0', 'classifier'\\).*resume with the "
                                                    "same settings"):
        resume_state(dataclasses.replace(cfg, train_only=()))


def test_train_never_writes_over_files_in_a_folder_that_is_not_its_run(dataset, tmp_path, capsys):
    """``train -o`` at a folder of someone's files named as a run's (split.json, history.jsonl,
    best.pt) is refused before anything is written; the same command after a run stopped before its
    first checkpoint (its own split.json and history.jsonl there) goes on."""
    for name in ("split.json", "history.jsonl", "best.pt"):
        folder = tmp_path / f"mine-{name}"
        folder.mkdir()
        (folder / name).write_text("my notes")
        assert main(["train", str(dataset), "-o", str(folder), "--iterations", "2", *TINY]) == 2
        err = capsys.readouterr().err.strip()
        assert f"already holds {name}" in err and "empty folder" in err and len(err.splitlines()) == 1
        assert [p.name for p in folder.iterdir()] == [name] and (folder / name).read_text() == "my notes"
    run = tmp_path / "run"
    assert main(["train", str(dataset), "-o", str(run), "--iterations", "2", "--checkpoint-every", "2", *TINY]) == 0
    for name in ("checkpoint.pt", "best.pt", "bones-model.pt"):  # as if stopped before its first checkpoint
        (run / name).unlink()
    assert main(["train", str(dataset), "-o", str(run), "--iterations", "2", "--checkpoint-every", "2", *TINY]) == 0
    assert (run / "bones-model.pt").is_file()
