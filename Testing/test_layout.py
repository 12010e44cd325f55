"""The package layout reads as the data flow, and its boundaries hold: inference never reaches
into training or Slicer, and only slicer/ (and the module file) touches MRML, Qt or CTK."""

from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parent.parent / "BoneSegmentation" / "BoneSegmentationLib"
GUI_MODULES = ("slicer", "qt", "ctk", "vtkmodules.vtkMRMLCore", "vtkSlicer", "mrml")


def imports_of(path: Path) -> set[str]:
    """Absolute dotted names a file imports (relative imports resolved inside the package)."""
    package = ["BoneSegmentationLib", *path.relative_to(LIB).parent.parts]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def test_layout_has_the_stages():
    stages = {p.name for p in LIB.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert {"core", "model", "inference", "training", "evaluation", "synthetic", "export", "slicer"} <= stages
    flat = [p.name for p in LIB.glob("*.py")]
    assert sorted(flat) == ["__init__.py", "__main__.py", "cli.py"], flat


def test_inference_imports_nothing_from_training_or_slicer():
    for path in (LIB / "inference").glob("*.py"):
        bad = {m for m in imports_of(path)
               if m.startswith(("BoneSegmentationLib.training", "BoneSegmentationLib.slicer"))}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_only_the_slicer_package_touches_slicer_qt_ctk():
    for path in LIB.rglob("*.py"):
        if path.relative_to(LIB).parts[0] == "slicer":
            continue
        bad = {m for m in imports_of(path) if m.split(".")[0] in GUI_MODULES or "MRML" in m}
        assert not bad, f"{path.relative_to(LIB)} imports {sorted(bad)}"


def test_the_boundary_check_sees_a_violation():
    """The checker resolves relative imports: a file in inference/ importing training is caught."""
    probe = LIB / "inference" / "_probe_violation.py"
    probe.write_text("from ..training.train import train\nimport slicer\n", encoding="utf-8")
    try:
        found = imports_of(probe)
    finally:
        probe.unlink()
    assert "BoneSegmentationLib.training.train" in found and "slicer" in found


def test_slicer_logic_loads_without_torch(tmp_path):
    """The panel must open before PyTorch is installed (it offers to install it)."""
    import subprocess
    import sys
    code = ("import builtins; real = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    if name.split('.')[0] == 'torch': raise ImportError('no torch here')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            "from BoneSegmentationLib.slicer.logic import SlicerSegmentationLogic, missing_dependencies\n"
            "from BoneSegmentationLib.inference.options import InferenceOptions\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_consistency_works_on_labels_alone():
    """The anatomical step is geometry on label maps: no training, Slicer or network code."""
    for path in (LIB / "consistency").glob("*.py"):
        bad = {m for m in imports_of(path) if m.startswith(("BoneSegmentationLib.training", "BoneSegmentationLib.slicer",
                                                               "BoneSegmentationLib.model"))}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_every_package_folder_is_installed():
    """pyproject.toml names every package folder (a missing one installs without it)."""
    import tomllib
    pyproject = tomllib.loads((LIB.parent.parent / "pyproject.toml").read_text(encoding="utf-8"))
    declared = set(pyproject["tool"]["setuptools"]["packages"])
    folders = {"BoneSegmentationLib"} | {f"BoneSegmentationLib.{p.name}" for p in LIB.iterdir()
                                          if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders <= declared, sorted(folders - declared)


def test_the_panels_pip_requirements_are_the_packages():
    """The panel installs what pyproject.toml declares: same pins for the core dependencies and for
    the OpenVINO engine's ``fast-cpu`` extra (one source per pin, checked rather than copied)."""
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from BoneSegmentationLib.slicer.environment import OPENVINO_REQUIREMENT, REQUIREMENTS

    project = tomllib.loads((LIB.parent.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {r.split(";")[0].strip() for r in project["dependencies"]}
    assert set(REQUIREMENTS.values()) <= declared, set(REQUIREMENTS.values()) - declared
    assert project["optional-dependencies"]["fast-cpu"] == [OPENVINO_REQUIREMENT]
