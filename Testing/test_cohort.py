"""Cohorts: `segment` over a folder, a list file or several inputs writes one output per scan into
a folder, resumes after a kill without redoing a finished scan, records a failing scan and goes
on, and under torchrun (2 processes, gloo) splits the scans without overlap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import SimpleITK as sitk

from BoneSegmentationLib.cli import main
from BoneSegmentationLib.core.errors import BoneSegmentationError
from BoneSegmentationLib.inference.cohort import is_cohort, list_scans, plan, share
from BoneSegmentationLib.synthetic.phantom import make_phantom

from conftest import make_random_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Three small CTs in a folder and a tiny random model at their spacing."""
    root = tmp_path_factory.mktemp("cohort")
    (root / "scans").mkdir()
    ct = make_phantom(3, spacing=8.0, partial=False)[0]
    for k, (a, b) in enumerate(((0, 24), (24, 48), (48, 72))):
        sitk.WriteImage(ct[:, :, a:b], str(root / "scans" / f"scan{k}.nii.gz"))
    model = make_random_model(root / "tiny.pt", patch=32, spacing=8.0, base_features=2, levels=2)
    return root, model


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "BoneSegmentation") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_scans_are_listed_planned_and_shared(cohort, tmp_path):
    root, _ = cohort
    scans = list_scans([str(root / "scans")])
    assert [p.name for p in scans] == ["scan0.nii.gz", "scan1.nii.gz", "scan2.nii.gz"]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my cohort\n{root / 'scans' / 'scan2.nii.gz'}\n\n{root / 'scans' / 'scan0.nii.gz'}\n")
    assert [p.name for p in list_scans([str(listing)])] == ["scan2.nii.gz", "scan0.nii.gz"]
    assert is_cohort([str(root / "scans")]) and is_cohort([str(listing)]) and is_cohort(["a", "b"])
    assert not is_cohort([str(root / "scans" / "scan0.nii.gz")])
    planned = plan(scans, tmp_path / "out")
    assert planned[1].labels == tmp_path / "out" / "scan1.nii.gz" and planned[1].sidecar.name == "scan1.json"
    assert [s.source.name for s in share(planned, 1, 2)] == ["scan1.nii.gz"]
    with pytest.raises(BoneSegmentationError, match="same output"):
        list_scans([str(root / "scans" / "scan0.nii.gz"), str(root / "scans" / "scan0.nii.gz")])


def test_a_killed_run_resumes_without_redoing_a_finished_scan(cohort, tmp_path, capsys):
    root, model = cohort
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "BoneSegmentationLib", "segment", str(root / "scans"), "-o", str(out),
           "--model", str(model), "--device", "cpu", "--no-mirror", "--overlap", "0"]
    run = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "scan0.json").exists() and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    run.kill()
    run.wait()
    assert (out / "scan0.json").exists()
    first = (out / "scan0.nii.gz").stat().st_mtime_ns
    assert main(["segment", str(root / "scans"), "-o", str(out), "--model", str(model), "--device", "cpu",
                 "--no-mirror", "--overlap", "0", "-q"]) == 0
    table = capsys.readouterr().out
    assert "| scan0.nii.gz | skipped (already done) |" in table
    assert (out / "scan0.nii.gz").stat().st_mtime_ns == first  # not redone
    assert all((out / f"scan{k}.json").exists() and (out / f"scan{k}.review.json").exists() for k in range(3))
    assert "3 scans:" in table and "0 failed" in table


def test_a_failing_scan_is_recorded_and_the_others_go_on(cohort, tmp_path, capsys):
    root, model = cohort
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes((root / "scans" / "scan1.nii.gz").read_bytes()[:200])  # truncated
    code = main(["segment", str(root / "scans" / "scan0.nii.gz"), str(broken), "-o", str(tmp_path / "out"),
                 "--model", str(model), "--device", "cpu", "--no-mirror", "--overlap", "0", "-q"])
    table = capsys.readouterr().out
    assert code == 2 and "| broken.nii.gz | failed:" in table and "| scan0.nii.gz | done |" in table
    assert (tmp_path / "out" / "scan0.nii.gz").exists() and not (tmp_path / "out" / "broken.nii.gz").exists()


def test_torchrun_splits_the_scans_without_overlap(cohort, tmp_path):
    root, model = cohort
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", "29517", "-m", "BoneSegmentationLib", "segment", str(root / "scans"),
                          "-o", str(out), "--model", str(model), "--device", "cpu", "--no-mirror", "--overlap", "0",
                          "-q"], env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    ranks = {k: json.loads((out / f"scan{k}.json").read_text())["cohort"] for k in range(3)}
    assert {k: r["rank"] for k, r in ranks.items()} == {0: 0, 1: 1, 2: 0}
    assert all(r["world_size"] == 2 for r in ranks.values())
    assert run.stdout.count("| scan1.nii.gz | done |") == 1 and "3 scans: 3 segmented" in run.stdout


def test_one_file_named_for_a_folder_takes_its_one_scan_and_refuses_several(cohort, tmp_path, capsys):
    """``-o bones.nii.gz`` for a DICOM tree given by its top folder (PATIENT/STUDY/SERIES: read as
    a folder of one scan) writes that file; for a folder of three scans it is refused in one line
    and nothing is made (before, a folder named bones.nii.gz held them). A series folder with a
    subfolder beside its files (a viewer's) is one scan, not a cohort."""
    import numpy as np
    from test_imageio import cube_column, write_dicom_series

    root, model = cohort
    series = tmp_path / "export" / "PATIENT1" / "STUDY1"
    series.mkdir(parents=True)
    volume = cube_column((24, 32, 32))
    write_dicom_series(series / "CT", volume, spacing=(8.0, 8.0, 8.0))
    out = tmp_path / "bones.nii.gz"
    assert main(["segment", str(tmp_path / "export"), "-o", str(out), "--model", str(model), "-q"]) == 0
    labels = sitk.ReadImage(str(out))
    assert labels.GetSize() == (32, 32, 24) and (out.parent / "bones.json").is_file()
    assert np.allclose(labels.GetOrigin(), sitk.ReadImage(sorted(map(str, (series / "CT").iterdir())))
                       .GetOrigin())

    capsys.readouterr()
    refused = tmp_path / "many.nii.gz"
    assert main(["segment", str(root / "scans"), "-o", str(refused), "--model", str(model), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the note that the tiny model is unregistered
    assert "names one file, but the input holds 3 scans (scan0.nii.gz, scan1.nii.gz, scan2.nii.gz)" in err
    assert not refused.exists()

    (series / "CT" / "VIEWER").mkdir()
    (series / "CT" / "VIEWER" / "viewer.exe").write_bytes(b"MZ")
    assert not is_cohort([str(series / "CT")])
    assert main(["segment", str(series / "CT"), "-o", str(tmp_path / "one.nii.gz"), "--model", str(model), "-q"]) == 0
