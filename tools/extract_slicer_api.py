"""Regenerate ``Testing/slicer_api/*.json``: the API of the Slicer, CTK and qMRML classes the module
uses, read from their C++ headers and Python sources, with the source commit recorded.

    git clone https://github.com/Slicer/Slicer && git clone https://github.com/commontk/CTK
    python tools/extract_slicer_api.py --slicer Slicer --ctk CTK

Qt's own classes are checked against PySide6 (Qt itself) and ``vtk`` / MRML against the installed
packages, so they need no list. The conformance test (``Testing/test_slicer_api.py``) checks every
name the module uses against these lists.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "Testing" / "slicer_api"

CTK_HEADERS = {"ctkCollapsibleButton": "Libs/Widgets/ctkCollapsibleButton.h",
               "ctkSliderWidget": "Libs/Widgets/ctkSliderWidget.h",
               "ctkPathLineEdit": "Libs/Widgets/ctkPathLineEdit.h"}
SLICER_HEADERS = {"qMRMLNodeComboBox": "Libs/MRML/Widgets/qMRMLNodeComboBox.h",
                  "qMRMLWidget": "Libs/MRML/Widgets/qMRMLWidget.h",
                  "qSlicerCoreApplication": "Base/QTCore/qSlicerCoreApplication.h",
                  "qSlicerModuleManager": "Base/QTCore/qSlicerModuleManager.h",
                  "qSlicerApplication": "Base/QTGUI/qSlicerApplication.h",
                  "qSlicerAbstractCoreModule": "Base/QTCore/qSlicerAbstractCoreModule.h",
                  "qSlicerAbstractModuleWidget": "Base/QTGUI/qSlicerAbstractModuleWidget.h",
                  "qSlicerAbstractModuleRepresentation": "Base/QTCore/qSlicerAbstractModuleRepresentation.h"}

ACCESS = re.compile(r"^\s*(public|protected|private)\s*(Q_SLOTS|slots)?\s*:|^\s*(Q_SIGNALS|signals)\s*:")
PROPERTY = re.compile(r"Q_PROPERTY\(\s*[\w:<>, ]+?[\s*&]+(\w+)\s+READ")
METHOD = re.compile(r"(?:^|[\s*&])(~?\w+)\s*\(([^()]*(?:\([^()]*\)[^()]*)*)\)\s*(?:const)?\s*(?:override)?\s*(?:=\s*0)?\s*;")
BASE = re.compile(r"class\s+\w+_EXPORT\s+(\w+)\s*:\s*public\s+(\w+)")
ENUM = re.compile(r"enum\s+(\w+)\s*\{([^}]*)\}", re.S)


def normalized_arguments(args: str) -> str:
    """C++ parameter list as Qt's normalized signature writes it: types only, no const/&."""
    out = []
    for part in [p.strip() for p in args.split(",") if p.strip() and p.strip() != "void"]:
        part = part.split("=")[0].strip()
        part = re.sub(r"\bconst\b", "", part).replace("&", " ").strip()
        tokens = re.findall(r"[\w:<>]+\**|\*+", part)
        if len(tokens) > 1 and re.fullmatch(r"\w+", tokens[-1]):
            tokens = tokens[:-1]  # the parameter's name
        out.append("".join(t if t.startswith("*") else (" " + t if i else t) for i, t in enumerate(tokens)).strip())
    return ",".join(out)


def parse_header(text: str) -> dict:
    """Public properties, signals (normalized signatures), slots and methods, base class, enums."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    api = {"properties": sorted(set(PROPERTY.findall(text))), "signals": [], "slots": [], "methods": [],
           "base": "", "enums": {}}
    base = BASE.search(text)
    api["base"] = base.group(2) if base else ""
    for name, body in ENUM.findall(text):
        api["enums"][name] = [item.split("=")[0].strip() for item in body.split(",") if item.strip()]
    section = "private"
    statement = ""
    for line in text.splitlines():
        m = ACCESS.match(line)
        if m:
            section = "signals" if m.group(3) else (m.group(1) + ("_slots" if m.group(2) else ""))
            statement = ""
            continue
        if section not in ("public", "public_slots", "signals"):
            continue
        statement += " " + line.strip()
        if not statement.rstrip().endswith((";", "{", "}")):
            continue
        for name, args in METHOD.findall(statement.replace("Q_INVOKABLE", "").replace("virtual", "")
                                         .replace("static", "")):
            if name.startswith("~") or name in ("Q_PROPERTY", "Q_DECLARE_PRIVATE", "Q_OBJECT"):
                continue
            key = {"signals": "signals", "public_slots": "slots"}.get(section, "methods")
            entry = f"{name}({normalized_arguments(args)})" if key != "methods" else name
            if entry not in api[key]:
                api[key].append(entry)
        statement = ""
    for key in ("signals", "slots", "methods"):
        api[key] = sorted(api[key])
    return api


def python_members(source: str) -> dict:
    """Classes and their methods/attributes, and module-level functions, of a Python source."""
    tree = ast.parse(source)
    out = {"functions": sorted(n.name for n in tree.body if isinstance(n, ast.FunctionDef)), "classes": {}}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            for n in ast.walk(node):
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self" \
                        and isinstance(n.ctx, ast.Store):
                    members.add(n.attr)
            out["classes"][node.name] = sorted(members)
    return out


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def read(repo: Path, path: str) -> str:
    if (repo / ".git").exists() or (repo / "HEAD").exists():
        try:
            return git(repo, "show", f"HEAD:{path}")
        except subprocess.CalledProcessError:
            pass
    return (repo / path).read_text(encoding="utf-8")


def module_names(repo: Path) -> list[str]:
    """Names under ``slicer.modules`` (lower case): every loadable, scripted and CLI module."""
    files = git(repo, "ls-tree", "-r", "--name-only", "HEAD", "Modules").splitlines()
    names = set()
    for f in files:
        parts = f.split("/")
        if len(parts) >= 3 and parts[1] in ("Loadable", "Scripted", "CLI") and parts[2] and "." not in parts[2]:
            names.add(parts[2].lower())
    return sorted(names)


def function_parameters(source: str, name: str) -> list[str]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return [a.arg for a in node.args.args]
    raise ValueError(f"{name} not found")


def catalog_schema(repo: Path) -> dict:
    """The newest Extensions Index entry schema: its id, required and allowed keys."""
    names = [f for f in git(repo, "ls-tree", "-r", "--name-only", "HEAD", "Schemas").splitlines()
             if "slicer-extension-catalog-entry-schema" in f]
    schema = json.loads(read(repo, sorted(names)[-1]))
    return {"id": schema["$id"], "required": schema["required"], "properties": sorted(schema["properties"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slicer", required=True, type=Path, help="a clone (or bare mirror) of Slicer/Slicer")
    ap.add_argument("--ctk", required=True, type=Path, help="a clone (or bare mirror) of commontk/CTK")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    ctk = {"source": "https://github.com/commontk/CTK", "commit": git(args.ctk, "rev-parse", "HEAD").strip(),
           "classes": {name: parse_header(read(args.ctk, path)) for name, path in CTK_HEADERS.items()}}
    slicer = {"source": "https://github.com/Slicer/Slicer", "commit": git(args.slicer, "rev-parse", "HEAD").strip(),
              "classes": {name: parse_header(read(args.slicer, path)) for name, path in SLICER_HEADERS.items()},
              "util": sorted(python_members(read(args.slicer, "Base/Python/slicer/util.py"))["functions"] +
                             list(python_members(read(args.slicer, "Base/Python/slicer/util.py"))["classes"])),
              "ScriptedLoadableModule": python_members(
                  read(args.slicer, "Base/Python/slicer/ScriptedLoadableModule.py"))["classes"],
              "modules": module_names(args.slicer),
              "extension_catalog_schema": catalog_schema(args.slicer),
              "SampleData.registerCustomSampleDataSource": function_parameters(
                  read(args.slicer, "Modules/Scripted/SampleData/SampleData.py"), "registerCustomSampleDataSource")}
    decorators = read(args.slicer, "Base/QTCore/qSlicerBaseQTCorePythonQtDecorators.h")
    slicer["classes"]["qSlicerCoreApplication"]["methods"] = sorted(  # PythonQt decorators add these
        set(slicer["classes"]["qSlicerCoreApplication"]["methods"]) |
        set(re.findall(r"static_qSlicerCoreApplication_(\w+)\(", decorators)))
    for name, data in (("ctk", ctk), ("slicer", slicer)):
        (OUT / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {OUT / name}.json ({data['commit'][:12]})")


if __name__ == "__main__":
    main()
