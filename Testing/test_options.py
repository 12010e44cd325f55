"""InferenceOptions: one encoding through the CLI, the child process, the parameter node and the
sidecar JSON; the sidecar beside every output; demo and compare honour every option."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import SimpleITK as sitk

from BoneSegmentationLib.cli import build_parser, main
from BoneSegmentationLib.inference.options import InferenceOptions, OptionError
from BoneSegmentationLib.synthetic.phantom import make_phantom

from conftest import make_random_model


@pytest.fixture(scope="module")
def coarse_model(tmp_path_factory):
    """A random-weight model at the 6 mm of the phantoms below: the tests check options and
    records, not accuracy, so the network need not run at 2 mm (minutes on a CPU)."""
    return make_random_model(tmp_path_factory.mktemp("coarse") / "random.pt", spacing=6.0, patch=32)

SAMPLES = [InferenceOptions(), InferenceOptions(device="cpu", overlap=0.25, stitch=2, mirror="on", threads=1),
           InferenceOptions(device="cuda:1", overlap=0.0, stitch=4, mirror="off", anatomy=False, accumulate="float16",
                            edges=False)]


@pytest.mark.parametrize("options", SAMPLES)
def test_argv_round_trip_through_a_child_process(options):
    """Options -> argv -> a separate Python process parsing them with the real CLI parser -> JSON ->
    the same options."""
    code = ("import json, sys\n"
            "from BoneSegmentationLib.cli import build_parser\n"
            "from BoneSegmentationLib.inference.options import InferenceOptions\n"
            "args = build_parser().parse_args(sys.argv[1:])\n"
            "print(json.dumps(InferenceOptions.from_args(args).to_json()))\n")
    argv = ["segment", "ct.nii.gz", "-o", "out.nii.gz", *options.to_argv()]
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120, check=True)
    assert InferenceOptions.from_json(json.loads(out.stdout)) == options


@pytest.mark.parametrize("options", SAMPLES)
def test_parameter_node_round_trip(options):
    """The panel's parameter node (a real vtkMRMLScriptedModuleNode) holds all three mirror states."""
    import slicer
    from BoneSegmentationLib.slicer.logic import SlicerSegmentationLogic
    node = slicer.vtkMRMLScriptedModuleNode()
    SlicerSegmentationLogic.options_to_parameters(options, node)
    assert SlicerSegmentationLogic.options_from_parameters(node) == options
    back = slicer.vtkMRMLScriptedModuleNode()
    SlicerSegmentationLogic.options_to_parameters(SlicerSegmentationLogic.options_from_parameters(node), back)
    assert all(back.GetParameter(k) == node.GetParameter(k) for k in InferenceOptions.PARAMETERS.values())


def test_defaults_in_the_panel_come_from_the_options():
    from BoneSegmentationLib.slicer.logic import SlicerSegmentationLogic
    params = SlicerSegmentationLogic.default_parameters()
    assert InferenceOptions.from_parameters(params) == InferenceOptions() and params["Mirror"] == "model"


@pytest.mark.parametrize("bad, message", [
    ({"overlap": 0.95}, "overlap"), ({"stitch": 0}, "stitch"), ({"mirror": "yes"}, "mirror"),
    ({"device": "gpu"}, "device"), ({"threads": 0}, "threads"), ({"overlap": float("nan")}, "overlap"),
    ({"engine": "tensorrt"}, "engine"), ({"anatomy": "yes"}, "anatomy"), ({"accumulate": "bfloat16"}, "accumulate"),
    ({"edges": 1}, "edges")])
def test_invalid_options_are_refused_with_the_option_named(bad, message):
    with pytest.raises(OptionError, match=message):
        InferenceOptions(**bad)


def test_cli_refuses_a_bad_device_in_one_line(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "o.nii.gz"), "--device", "gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "device must be auto, cpu, cuda" in err


def test_segment_writes_a_sidecar_naming_options_and_model(tmp_path, coarse_model):
    ct, _, _ = make_phantom(3, spacing=6.0, partial=True)
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    out = tmp_path / "bones.nii.gz"
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(out), "--model", str(coarse_model),
                 "--device", "cpu", "--overlap", "0.1", "--no-mirror", "-q"]) == 0
    sidecar = json.loads((tmp_path / "bones.json").read_text())
    assert sidecar["options"] == InferenceOptions(device="cpu", overlap=0.1, mirror="off").to_json()
    assert sidecar["model"]["name"] == "random-test" and len(sidecar["model"]["sha256"]) == 64
    assert sidecar["resolved"]["mirrored"] is False and sidecar["outputs"]["labels"] == str(out)
    assert sidecar["input"]["size"] == list(ct.GetSize()) and sidecar["timings_s"]["total_s"] > 0
    assert sidecar["anatomy"]["ran"] is True and "anatomy_s" in sidecar["timings_s"]
    assert isinstance(sidecar["anatomy"]["edges_grown"], int) and isinstance(sidecar["anatomy"]["canals_filled"], int)
    assert isinstance(sidecar["anatomy"]["enclosed_filled"], int)
    assert all({"bone", "kind", "text", "voxels"} <= set(c) for c in sidecar["anatomy"]["changes"])
    review = json.loads((tmp_path / "bones.review.json").read_text())
    flagged = {b["name"]: " ".join(b["reasons"]) for b in review["bones"]}  # every change is listed for review
    assert all(c["text"] in flagged[c["bone"]] for c in sidecar["anatomy"]["changes"])
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "plain.nii.gz"), "--model",
                 str(coarse_model), "--device", "cpu", "--overlap", "0.1", "--no-mirror", "--no-anatomy", "-q"]) == 0
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert plain["options"]["anatomy"] is False and plain["anatomy"] == {"ran": False, "skipped":
                                                                         "switched off (--no-anatomy)",
                                                                         "seconds": 0.0, "changes": [],
                                                                         "outside_body_on_input_grid": 0,
                                                                         "cores_filled": 0, "edges_grown": 0,
                                                                         "canals_filled": 0, "enclosed_filled": 0}
    # an existing sidecar is not overwritten silently
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "other.nii.gz"),
                 "--model", str(coarse_model), "--device", "cpu", "-q"]) == 0
    (tmp_path / "other.nii.gz").unlink()
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "other.nii.gz"),
                 "--model", str(coarse_model), "--device", "cpu", "-q"]) == 2


def test_demo_and_compare_parse_every_option():
    for command in (["demo"], ["compare", "d", "--models", "m"], ["segment", "ct", "-o", "o.nii.gz"]):
        args = build_parser().parse_args(command + ["--device", "cpu", "--overlap", "0.3", "--stitch", "2",
                                                    "--mirror", "--threads", "1"])
        assert InferenceOptions.from_args(args) == InferenceOptions("cpu", 0.3, 2, "on", 1)


def test_demo_honours_the_options(tmp_path, coarse_model):
    from BoneSegmentationLib.synthetic.demo import run_demo
    options = InferenceOptions(device="cpu", overlap=0.0, mirror="off")
    result = run_demo(tmp_path, model=str(coarse_model), spacing=6.0, options=options)
    sidecar = json.loads(result.files["sidecar"].read_text())
    assert InferenceOptions.from_json(sidecar["options"]) == options and sidecar["resolved"]["mirrored"] is False
    assert "overlap 0" in (tmp_path / "evaluation.md").read_text()
