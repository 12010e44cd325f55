"""Hostile inputs: files from outside must not run code or write outside where we said.

Each payload here would do real harm if it ran (write a marker file, overwrite a file through
``torch.from_file(..., shared=True)``); the tests check that it did not run and that the refusal
is one clear line."""

from __future__ import annotations

import gzip
import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from BoneSegmentationLib.core.errors import BoneSegmentationError, DatasetError, DownloadError, ModelFileError
from BoneSegmentationLib.core.files import safe_name
from BoneSegmentationLib.model import registry
from BoneSegmentationLib.model.modelfile import load_model, make_metadata
from BoneSegmentationLib.model.registry import DEFAULT_MODEL, resolve_model
from BoneSegmentationLib.training.corrections import add_case
from BoneSegmentationLib.training.train import TrainConfig, load_checkpoint, train

from conftest import make_random_model


def _metadata(name: str = "hostile") -> dict:
    return make_metadata(name=name, version="1", description="payload", training={},
                         network={"architecture": "x", "base_features": 4, "levels": 3, "size_divisor": 4})


class _RunsShell:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_checkpoint_with_a_code_payload_is_refused_and_the_payload_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "iteration": 1, "x": _RunsShell(marker)}, tmp_path / "checkpoint.pt")
    with pytest.raises(BoneSegmentationError, match="refused: it holds objects other than tensors"):
        load_checkpoint(tmp_path / "checkpoint.pt", "cpu")
    assert not marker.exists()
    # and through training's resume path, which reads the same file
    cfg = TrainConfig(out_dir=str(tmp_path), iterations=2, width=4, levels=3, patch=16, spacing=4.0)
    with pytest.raises(BoneSegmentationError, match="refused"):
        train(cfg, [], [])
    assert not marker.exists()


def test_truncated_checkpoint_is_named_not_a_traceback(tmp_path):
    torch.save({"model": {"w": torch.zeros(1000)}, "iteration": 3}, tmp_path / "checkpoint.pt")
    data = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(BoneSegmentationError, match="corrupt or incomplete.*delete it") as e:
        load_checkpoint(tmp_path / "checkpoint.pt", "cpu")
    assert "\n" not in str(e.value)


class _WritesThroughFromFile(torch.nn.Module):
    """A 'network' whose forward pass overwrites a file (torch.from_file with shared=True)."""

    def __init__(self, target: str):
        super().__init__()
        self.target = target
        self.conv = torch.nn.Conv3d(1, 126, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        written = torch.from_file(self.target, shared=True, size=4, dtype=torch.uint8).fill_(65)
        return self.conv(x) + written.sum() * 0  # used, so TorchScript keeps the call


class _WritesWhileLoading(torch.nn.Module):
    """A module whose __setstate__ (run by torch.jit.load itself) overwrites a file."""

    def __init__(self, target: str):
        super().__init__()
        self.target = target
        self.conv = torch.nn.Conv3d(1, 126, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return self.target, self.training

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        self.target = state[0]
        self.training = state[1]
        written = torch.from_file(self.target, shared=True, size=4, dtype=torch.uint8).fill_(66)
        if bool(written.sum() > 0):
            self.training = True


@pytest.mark.parametrize("network, message", [
    (_WritesThroughFromFile, "operations a segmentation network does not need .*aten::from_file"),
    (_WritesWhileLoading, "defines __setstate__"),
])
def test_torchscript_payloads_are_refused_before_they_run(tmp_path, network, message):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"keep")
    scripted = torch.jit.script(network(str(victim)))
    model = tmp_path / "model.pt"
    torch.jit.save(scripted, str(model), _extra_files={"metadata.json": json.dumps(_metadata())})
    assert victim.read_bytes() == b"keep"
    if network is _WritesThroughFromFile:  # the payload is real: run unchecked, it writes
        torch.jit.load(str(model))(torch.zeros(1, 1, 2, 2, 2))
        assert victim.read_bytes() == b"AAAA"
        victim.write_bytes(b"keep")
    with pytest.raises(ModelFileError, match=message) as e:
        load_model(model)
    assert victim.read_bytes() == b"keep" and "\n" not in str(e.value)


def test_flipped_bytes_in_a_model_file_are_caught_by_the_zip_checksums(tmp_path):
    path = make_random_model(tmp_path / "m.pt")
    with zipfile.ZipFile(path) as zf:
        member = max(zf.infolist(), key=lambda i: i.file_size)
        start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    data = bytearray(path.read_bytes())
    for k in range(64):
        data[start + 100 + k] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="is corrupt: .*(fails its checksum|fails to decompress)"):
        load_model(path)


def _with_bomb(path: Path, megabytes: int) -> Path:
    """``path`` (a zip: a TorchScript model or a checkpoint) with one more member: ``megabytes`` of
    zeros, deflated to a few hundred KB (a zip bomb, in small)."""
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open(f"{zf.namelist()[0].split('/')[0]}/extra/padding", "w") as member:
            zeros = bytes(2 ** 20)
            for _ in range(megabytes):
                member.write(zeros)
    return path


def test_a_model_file_that_unpacks_to_more_than_a_model_holds_is_refused_before_inflating(tmp_path, monkeypatch):
    from BoneSegmentationLib.model import safety

    monkeypatch.setattr(safety, "MAX_UNPACKED_BYTES", 64 * 2 ** 20)  # the real cap is 2 GiB: the same code, smaller
    path = _with_bomb(make_random_model(tmp_path / "m.pt"), 80)
    assert path.stat().st_size < 2 * 2 ** 20
    read = []
    monkeypatch.setattr(zipfile.ZipFile, "testzip", lambda self: read.append(1))
    with pytest.raises(ModelFileError, match=r"unpack to 0\.1 GiB, more than the 0\.0625 GiB") as e:
        load_model(path)
    assert not read and "\n" not in str(e.value)  # refused from the sizes the zip declares, nothing inflated
    load_model(make_random_model(tmp_path / "plain.pt"))  # a model under the cap loads


def test_a_checkpoint_that_unpacks_to_more_than_a_run_holds_is_refused(tmp_path, monkeypatch):
    from BoneSegmentationLib.training import train as train_module

    monkeypatch.setattr(train_module, "MAX_CHECKPOINT_BYTES", 64 * 2 ** 20)
    torch.save({"model": {"w": torch.zeros(1000)}, "iteration": 3}, tmp_path / "checkpoint.pt")
    _with_bomb(tmp_path / "checkpoint.pt", 80)
    with pytest.raises(BoneSegmentationError, match="unpack to 0.1 GiB.*delete it to start the run over"):
        load_checkpoint(tmp_path / "checkpoint.pt", "cpu")


def test_a_file_named_like_the_default_model_does_not_replace_it(tmp_path, monkeypatch):
    impostor = tmp_path / DEFAULT_MODEL
    make_random_model(impostor)
    monkeypatch.chdir(tmp_path)
    bundled = resolve_model(None)
    assert bundled != impostor and bundled.resolve() != impostor.resolve()
    assert resolve_model(DEFAULT_MODEL) == bundled
    assert registry.registered_entry(bundled) is not None and registry.registered_entry(impostor) is None
    assert resolve_model(f"./{DEFAULT_MODEL}") == Path(f"./{DEFAULT_MODEL}")  # explicit path: the user's choice
    make_random_model(tmp_path / "mine")
    with pytest.raises(ModelFileError, match="give it as ./mine"):
        resolve_model("mine")


@pytest.mark.parametrize("name", ["../../x", "x/../y", ".hidden", "a\\b", "", "-rf", "x" * 101, "ok/.."])
def test_unsafe_names_are_refused(name):
    with pytest.raises(BoneSegmentationError, match="is not allowed"):
        safe_name(name, "case ID")


@pytest.mark.parametrize("case_id", ["../../x", "x/../y", ".hidden"])
def test_case_ids_cannot_leave_the_dataset(tmp_path, case_id):
    ct = sitk.GetImageFromArray(np.zeros((8, 8, 8), np.int16))
    labels = sitk.GetImageFromArray(np.zeros((8, 8, 8), np.uint8))
    dataset = tmp_path / "a" / "b" / "dataset"
    with pytest.raises(DatasetError, match="case ID .* is not allowed"):
        add_case(dataset, ct, labels, source_name="ct.nii.gz", case_id=case_id)
    assert list(tmp_path.rglob("*")) == []  # nothing written anywhere


def test_registry_entries_cannot_name_paths_outside_the_cache(tmp_path, monkeypatch):
    reg = tmp_path / "models.json"
    reg.write_text(json.dumps({"models": [{"name": "../../escaped", "version": "1", "url": "https://x/y.pt",
                                           "sha256": "0" * 64, "size": 1}]}))
    monkeypatch.setattr(registry, "registry_path", lambda: reg)
    monkeypatch.setenv("BONESEGMENTATION_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelFileError, match="model name in .* is not allowed"):
        resolve_model("whatever")
    reg.write_text("{not json")
    with pytest.raises(ModelFileError, match="unreadable .* fix or delete it"):
        resolve_model("whatever")


def test_training_run_names_cannot_leave_the_output_folder(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), iterations=1, name="../../evil")
    with pytest.raises(BoneSegmentationError, match="model name '../../evil' is not allowed"):
        train(cfg, [], [])
    assert not (tmp_path / "run").exists()


def test_a_training_run_never_replaces_a_model_file_it_did_not_write(tmp_path):
    """``train -o`` pointed at a folder of models (the repository's Resources/ holds the bundled
    one): the export at the end would have replaced a model of the run's name."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "bones-phantom-demo.pt").write_bytes(b"the bundled model")
    cfg = TrainConfig(out_dir=str(folder), iterations=1, name="bones-phantom-demo")
    with pytest.raises(BoneSegmentationError, match="no training run to resume"):
        train(cfg, [], [])
    assert sorted(p.name for p in folder.iterdir()) == ["bones-phantom-demo.pt"]
    assert (folder / "bones-phantom-demo.pt").read_bytes() == b"the bundled model"


def _small_ct(path: Path) -> Path:
    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(-1000, 1500, (16, 16, 16)).astype(np.int16))
    image.SetSpacing((4.0, 4.0, 4.0))
    sitk.WriteImage(image, str(path))
    return path


def test_segment_refuses_to_write_over_its_input(tmp_path, capsys):
    from BoneSegmentationLib.cli import main

    ct = _small_ct(tmp_path / "ct.nii.gz")
    before = ct.read_bytes()
    (tmp_path / "link.nii.gz").symlink_to(ct)
    for output in (ct, tmp_path / "link.nii.gz"):
        assert main(["segment", str(ct), "-o", str(output), "--overwrite", "-q"]) == 2
        err = capsys.readouterr().err.strip()
        assert "would replace the input" in err and len(err.splitlines()) == 1
    assert ct.read_bytes() == before


def test_segment_checks_every_output_before_any_work(tmp_path, capsys):
    from BoneSegmentationLib.cli import main

    ct = _small_ct(tmp_path / "ct.nii.gz")
    (tmp_path / "conf.nii.gz").write_bytes(b"mine")
    rc = main(["segment", str(ct), "-o", str(tmp_path / "labels.nii.gz"), "--confidence",
               str(tmp_path / "conf.nii.gz"), "-q"])
    assert rc == 2 and "conf.nii.gz already exists" in capsys.readouterr().err
    assert not (tmp_path / "labels.nii.gz").exists() and (tmp_path / "conf.nii.gz").read_bytes() == b"mine"


def test_evaluate_and_compare_never_write_over_an_input_or_an_existing_file(tmp_path, capsys):
    """``evaluate --csv ref.nii.gz`` once replaced the reference label map with the CSV table; the
    report outputs of ``evaluate`` and ``compare`` now pass the same check as ``segment``'s, before
    any work."""
    from BoneSegmentationLib.cli import main

    labels = np.zeros((12, 16, 16), np.uint8)
    labels[3:9, 4:12, 4:12] = 7
    image = sitk.GetImageFromArray(labels)
    pred, ref = tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz"
    sitk.WriteImage(image, str(pred))
    sitk.WriteImage(image, str(ref))
    (tmp_path / "mine.csv").write_text("mine")
    (tmp_path / "dataset").mkdir()
    kept = {p: p.read_bytes() for p in (pred, ref, tmp_path / "mine.csv")}
    refused = {
        ("evaluate", str(pred), str(ref), "--csv", str(ref), "--overwrite"): "would replace the input",
        ("evaluate", str(pred), str(ref), "--plot", str(pred), "--overwrite"): "would replace the input",
        ("evaluate", str(pred), str(ref), "--csv", str(tmp_path / "mine.csv")): "already exists",
        ("evaluate", str(pred), str(ref), "--csv", str(tmp_path / "a"), "--plot", str(tmp_path / "a")): "same file",
        ("compare", str(tmp_path / "dataset"), "--models", "m.pt", "-o", str(tmp_path / "mine.csv")): "already exists",
    }
    for command, reason in refused.items():
        assert main(list(command)) == 2, command
        err = capsys.readouterr().err.strip()
        assert reason in err and len(err.splitlines()) == 1, err
    assert all(p.read_bytes() == before for p, before in kept.items())
    assert main(["evaluate", str(pred), str(ref), "--csv", str(tmp_path / "mine.csv"), "--overwrite"]) == 0
    assert (tmp_path / "mine.csv").read_text().startswith("group,median")


def test_the_demo_never_replaces_a_users_files_of_its_names(tmp_path, capsys):
    """``demo -o`` at a folder of the user's own results: its common names (bones.nii.gz,
    review.json) are refused before any work unless an earlier demo wrote them or --overwrite."""
    from BoneSegmentationLib.cli import main
    from BoneSegmentationLib.inference.segmenter import SIDECAR_FORMAT
    from BoneSegmentationLib.synthetic.demo import check_demo_folder

    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "bones.nii.gz").write_bytes(b"my corrected labels")
    assert main(["demo", "-o", str(mine), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "bones.nii.gz, not written by the demo" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in mine.iterdir()) == ["bones.nii.gz"]
    assert (mine / "bones.nii.gz").read_bytes() == b"my corrected labels"
    sidecars = {"segment's own": json.dumps({"format": SIDECAR_FORMAT, "input": {"name": "ct.nii.gz"}}),
                "damaged": "{\"input\": ", "odd": json.dumps({"format": SIDECAR_FORMAT, "input": ["phantom seed"]}),
                "not a sidecar": json.dumps({"input": {"name": "phantom seed 7 at 2 mm"}}),
                "huge": " " * (2 << 20) + "{}"}
    for what, text in sidecars.items():
        (mine / "bones.json").write_text(text)
        with pytest.raises(BoneSegmentationError, match="not written by the demo"):
            check_demo_folder(mine)
    check_demo_folder(mine, overwrite=True)
    (mine / "bones.json").write_text(json.dumps({"format": SIDECAR_FORMAT, "input": {"name": "phantom seed 7 at 2 mm"}}))
    check_demo_folder(mine)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BoneSegmentationError, match="is a file, not a folder"):
        check_demo_folder(tmp_path / "file", overwrite=True)


def test_meshes_refuse_existing_files_before_meshing(tmp_path, capsys, monkeypatch):
    """``meshes --preview`` replaced a user's preview.png, and an existing bones.glb was refused
    only after the meshing (tens of seconds); both are now refused first, in one line."""
    from BoneSegmentationLib.cli import main
    from BoneSegmentationLib.export import meshes

    labels = np.zeros((12, 16, 16), np.uint8)
    labels[3:9, 4:12, 4:12] = 7
    source = tmp_path / "labels.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(source))
    out = tmp_path / "out"
    out.mkdir()
    (out / "preview.png").write_bytes(b"mine")
    (tmp_path / "stl").mkdir()
    (tmp_path / "stl" / "vertebra_C3.stl").write_bytes(b"mine too")

    def no_meshing(*args, **kwargs):
        raise AssertionError("meshed before the outputs were checked")
    monkeypatch.setattr(meshes, "bone_meshes", no_meshing)
    for command, reason in (
            (["meshes", str(source), "-o", str(out), "--preview"], "preview.png already exists"),
            (["meshes", str(source), "-o", str(tmp_path / "stl"), "--format", "stl"], "vertebra_C3.stl already exists")):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert reason in err and len(err.splitlines()) == 1, err
    assert (out / "preview.png").read_bytes() == b"mine"
    assert (tmp_path / "stl" / "vertebra_C3.stl").read_bytes() == b"mine too"
    (out / "bones.glb").write_bytes(b"old")
    assert main(["meshes", str(source), "-o", str(out)]) == 2
    assert "bones.glb already exists" in capsys.readouterr().err


class _HostileServer:
    """A server on 127.0.0.1 that misbehaves on purpose: /big sends more than it declares,
    /slow one byte every 0.5 s, /redirect points at plain http elsewhere, /ok serves the payload."""

    payload = bytes(range(256)) * 256  # 64 KiB

    def __enter__(self):
        import http.server
        import threading
        import time

        payload = self.payload

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://example.com/m.pt")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload) * (100 if self.path == "/big" else 1)))
                self.end_headers()
                try:
                    if self.path == "/big":
                        for _ in range(100):
                            self.wfile.write(payload)
                    elif self.path == "/slow":
                        for k in range(len(payload)):
                            self.wfile.write(payload[k:k + 1])
                            self.wfile.flush()
                            time.sleep(0.5)
                    else:
                        time.sleep(0.2)  # long enough for parallel clients to overlap
                        self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()

    def entry(self, path: str):
        import hashlib

        return registry.ModelEntry(name="m", version="1", url=self.url + path, size=len(self.payload),
                                   sha256=hashlib.sha256(self.payload).hexdigest())


@pytest.mark.parametrize("url", ["http://example.com/m.pt", "file:///etc/passwd", "ftp://127.0.0.1/m.pt"])
def test_downloads_are_https_only(tmp_path, url):
    entry = registry.ModelEntry(name="m", version="1", url=url, sha256="0" * 64, size=10)
    with pytest.raises(DownloadError, match="only https:// addresses are allowed"):
        registry.download(entry, cache=tmp_path)
    assert not list(tmp_path.iterdir())


def test_hostile_servers_are_cut_off(tmp_path):
    with _HostileServer() as server:
        with pytest.raises(DownloadError, match="only https://"):
            registry.download(server.entry("/redirect"), cache=tmp_path / "a", retries=1)
        with pytest.raises(DownloadError, match="sends more than the 65536 bytes expected"):
            registry.download(server.entry("/big"), cache=tmp_path / "b", retries=1)
        big = [p.stat().st_size for p in (tmp_path / "b").glob("*.part")]
        assert big in ([], [65536])  # never more than declared on disk
        with pytest.raises(DownloadError, match="did not finish in time"):
            registry.download(server.entry("/slow"), cache=tmp_path / "c", retries=1, deadline_s=2)


def test_parallel_downloads_of_one_model_all_succeed(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with _HostileServer() as server:
        entry = server.entry("/ok")
        for _ in range(2):  # repeated: races are intermittent
            cache = tmp_path / f"cache{_}"
            with ThreadPoolExecutor(6) as pool:
                paths = list(pool.map(lambda k: registry.download(entry, cache=cache), range(6)))
            assert len(set(paths)) == 1 and paths[0].read_bytes() == server.payload
            assert not list(cache.glob("*.part"))


@pytest.mark.parametrize("writers", [4, 8])
def test_parallel_dataset_adds_give_distinct_complete_cases(tmp_path, writers):
    """Each process adds a different scan of the same file name (so all want the ID ct_000; the
    scan's voxels carry its number): every one must be kept, under its own ID."""
    import subprocess
    import sys

    from BoneSegmentationLib.training.dataset import case_ids, image_path

    for k in range(writers):
        ct = sitk.GetImageFromArray(np.full((12, 12, 12), k, np.int16))
        (tmp_path / f"s{k}").mkdir()
        sitk.WriteImage(ct, str(tmp_path / f"s{k}" / "ct.nii.gz"))
        lab = sitk.GetImageFromArray(np.zeros((12, 12, 12), np.uint8))
        lab[2, 2, 2] = 1
        sitk.WriteImage(lab, str(tmp_path / f"lab{k}.nii.gz"))
    for repeat in range(2):
        dataset = tmp_path / f"dataset{repeat}"  # the first add into a new dataset races too
        runs = [subprocess.Popen([sys.executable, "-m", "BoneSegmentationLib", "dataset", "add", str(dataset),
                                  "--image", str(tmp_path / f"s{k}" / "ct.nii.gz"), "--labels", str(tmp_path / f"lab{k}.nii.gz")],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(writers)]
        outputs = [r.communicate() for r in runs]
        assert all(r.returncode == 0 for r in runs), [o[1] for o in outputs]
        ids = case_ids(dataset)
        assert ids == [f"ct_{k:03d}" for k in range(writers)] == sorted(o[0].split()[2] for o in outputs)
        scans = sorted(int(sitk.GetArrayFromImage(sitk.ReadImage(str(image_path(dataset, i))))[0, 0, 0]) for i in ids)
        assert scans == list(range(writers))
        assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == writers
        assert not [p for p in (dataset / ".pending").iterdir()]


def test_a_first_add_that_died_leaves_a_dataset_that_takes_the_next_add(tmp_path):
    from BoneSegmentationLib.training.dataset import case_ids, init_dataset

    init_dataset(tmp_path / "d")  # what a first add had done when it was killed
    ct = sitk.GetImageFromArray(np.zeros((8, 8, 8), np.int16))
    add_case(tmp_path / "d", ct, sitk.GetImageFromArray(np.zeros((8, 8, 8), np.uint8)), source_name="x.nii.gz")
    assert case_ids(tmp_path / "d") == ["x_000"]


@pytest.mark.parametrize("change, message", [
    (lambda m: m["intensity"].update(std=float("nan")), "not a number a model can use"),
    (lambda m: m["intensity"].update(clip_high=float("inf")), "not a number a model can use"),
    (lambda m: m.update(spacing_mm=[0.05, 0.05, 0.05]), "outside 0.1-20 mm"),
    (lambda m: m.update(patch_size=[4, 4, 4]), "8-512 voxels"),
    (lambda m: m.update(patch_size=[1024, 64, 64]), "8-512 voxels"),
    (lambda m: m.update(orientation="LPX"), "not a DICOM orientation code"),
    (lambda m: m.update(orientation="LLS"), "not a DICOM orientation code"),
    (lambda m: m["network"].update(size_divisor=3), "power of two"),
    (lambda m: m["network"].update(size_divisor=2 ** 20), "power of two"),
])
def test_absurd_model_metadata_is_one_clear_line(tmp_path, capsys, change, message):
    from BoneSegmentationLib.cli import main
    from BoneSegmentationLib.model.network import NoNewNet

    meta = _metadata()
    change(meta)
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(NoNewNet(126, base_features=4, levels=3)), str(path),
                   _extra_files={"metadata.json": json.dumps(meta)})
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def _nifti(tmp_path: Path, name: str, array: np.ndarray) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(image, str(tmp_path / name))
    return tmp_path / name


@pytest.mark.parametrize("name", ["ct.nii", "ct.nii.gz"])
def test_truncated_nifti_is_refused_not_zero_filled(tmp_path, name, capsys):
    from BoneSegmentationLib.cli import main

    path = _nifti(tmp_path, name, np.random.default_rng(0).integers(-1000, 1000, (40, 40, 40)).astype(np.int16))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.7)])
    assert main(["segment", str(path), "-o", str(tmp_path / "out.nii.gz"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert ("truncated" in err or "damaged" in err) and len(err.splitlines()) == 1
    assert not (tmp_path / "out.nii.gz").exists()


def test_a_truncated_nrrd_says_what_is_missing_in_one_line(tmp_path, capsys):
    """ITK's exception is a dozen lines ending in NRRD's own reason; the user gets that reason,
    without the class, the address or a dangling colon."""
    from BoneSegmentationLib.cli import main

    path = tmp_path / "ct.nrrd"
    image = sitk.GetImageFromArray(np.zeros((10, 20, 20), np.int16))
    sitk.WriteImage(image, str(path), False)  # raw, uncompressed: cut, it is short of voxels
    data = path.read_bytes()
    path.write_bytes(data[:-500])
    assert main(["segment", str(path), "-o", str(tmp_path / "out.nii.gz"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot read" in err
    assert "3750" in err and "4000" in err  # what was read, against what the header promised
    assert "0x" not in err and not err.endswith(":")
    assert not (tmp_path / "out.nii.gz").exists()


@pytest.mark.parametrize("damage", ["raw cut", "compressed cut", "compressed flipped", "data file cut",
                                    "data file missing"])
def test_a_damaged_metaimage_is_one_line_and_the_reader_prints_nothing(tmp_path, capfd, damage):
    """ITK's MetaImage reader prints "data not read completely" on the terminal and raises "File
    cannot be read", naming no cause: the header is read first and the cause given in one line."""
    from BoneSegmentationLib.cli import main

    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(-1000, 1500, (30, 40, 40)).astype(np.int16))
    image.SetSpacing((2.0, 2.0, 2.0))
    mhd = damage.startswith("data file")
    path = tmp_path / ("ct.mhd" if mhd else "ct.mha")
    sitk.WriteImage(image, str(path), useCompression=damage.startswith("compressed"))
    data = tmp_path / "ct.raw" if mhd else path
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(path))).shape == (30, 40, 40)  # intact, it reads
    content = data.read_bytes()
    if damage == "compressed flipped":
        middle = len(content) // 2
        data.write_bytes(content[:middle] + bytes(b ^ 0xFF for b in content[middle:middle + 8]) + content[middle + 8:])
    elif damage == "data file missing":
        data.unlink()
    else:
        data.write_bytes(content[:-len(content) // 3])
    capfd.readouterr()
    out = tmp_path / "bones.nii.gz"
    assert main(["segment", str(path), "-o", str(out), "-q"]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    expected = {"raw cut": "is truncated: its data hold 6",  # 64000 less the header's bytes, of 96000
                "compressed cut": "is truncated: its compressed data inflate to",
                "compressed flipped": "compressed voxel data",
                "data file cut": "is truncated: its data hold 64000 of the 96000 bytes",
                "data file missing": "its voxel data file 'ct.raw' is missing"}[damage]
    assert expected in err and "copy" in err
    assert "96000" in err or "cut" not in damage  # what the header declared
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".mhd", ".nhdr"])
@pytest.mark.parametrize("named", ["up", "absolute", "listed slice up", "pattern up", "below"])
def test_a_header_cannot_name_voxel_data_outside_its_folder(tmp_path, capfd, suffix, named):
    """ITK opens whatever file a .mhd or a detached NRRD header names: ``../`` or an absolute path
    would read any file the user can (``/etc/passwd`` as a CT). Here the named data are a valid
    CT, so only the check can refuse them; data in a folder below the header still read."""
    from BoneSegmentationLib.cli import main
    from BoneSegmentationLib.core.imageio import read_image

    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(-1000, 1500, (30, 40, 40)).astype(np.int16))
    image.SetSpacing((2.0, 2.0, 2.0))
    elsewhere, here = tmp_path / "elsewhere", tmp_path / "scan"
    for folder in (elsewhere, here, here / "data"):
        folder.mkdir()
    sitk.WriteImage(image, str(elsewhere / f"ct{suffix}"))  # ITK writes the data beside it as ct.raw
    raw = elsewhere / "ct.raw"
    (here / "data" / "ct.raw").write_bytes(raw.read_bytes())
    field = "ElementDataFile = " if suffix == ".mhd" else "data file: "
    header = (elsewhere / f"ct{suffix}").read_text()
    assert f"{field}ct.raw" in header
    header = header.replace(f"{field}ct.raw", field + "{}")
    if named.startswith("listed"):  # one file per slice, listed after the header
        planes = raw.read_bytes()
        size = len(planes) // 30
        for k in range(30):
            (here / f"s{k:02d}.raw").write_bytes(planes[k * size:(k + 1) * size])
        names = [f"s{k:02d}.raw" for k in range(29)] + ["../elsewhere/ct.raw"]
        text = header.format("LIST 2" if suffix == ".nhdr" else "LIST 2D").rstrip("\n") + "\n" + "\n".join(names) + "\n"
    else:
        text = header.format({"up": "../elsewhere/ct.raw", "absolute": str(raw), "below": "data/ct.raw",
                              "pattern up": "../elsewhere/s%02d.raw 0 29 1"}[named])
    path = here / f"ct{suffix}"
    path.write_text(text)
    if named == "below":
        np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(path)), sitk.GetArrayFromImage(image))
        return
    out = here / "bones.nii.gz"
    capfd.readouterr()
    assert main(["segment", str(path), "-o", str(out), "-q"]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "outside its own folder" in err and "elsewhere" in err, err
    assert not out.exists()


def test_a_name_far_down_a_slice_list_is_checked_too(tmp_path):
    """A list is read a line at a time to its end: the one outside name after 2 MB of harmless ones
    is found (a cap on what is read would let ITK open it)."""
    from BoneSegmentationLib.core.errors import InputImageError
    from BoneSegmentationLib.core.imageio import read_image

    names = "".join(f"slice{k:07d}.raw\n" for k in range(120_000)) + "../../etc/passwd\n"
    path = tmp_path / "ct.mhd"
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 4 120001\nElementType = MET_SHORT\n"
                    "ElementDataFile = LIST 2D\n" + names)
    assert path.stat().st_size > 2_000_000
    with pytest.raises(InputImageError, match="outside its own folder.*etc/passwd"):
        read_image(path)


def test_nifti_nan_infinity_and_zero_voxel_size_are_refused(tmp_path):
    """ITK reads a NIfTI's NaN and infinite floats as 0 (a CT with holes of water), so the file's
    own bytes are checked."""
    from BoneSegmentationLib.core.errors import InputImageError
    from BoneSegmentationLib.core.imageio import read_ct

    values = np.random.default_rng(0).normal(0, 500, (20, 20, 20)).astype(np.float32)
    values[3, 4, 5] = np.nan
    with pytest.raises(InputImageError, match="contains 1 NaN or infinite voxel values"):
        read_ct(_nifti(tmp_path, "nan.nii.gz", values))
    values[3, 4, 5], values[0, 0, 0], values[19, 19, 19] = 0, np.inf, -np.inf
    with pytest.raises(InputImageError, match="contains 2 NaN or infinite voxel values"):
        read_ct(_nifti(tmp_path, "inf.nii.gz", values))
    values[0, 0, 0] = values[19, 19, 19] = 0
    zero = _nifti(tmp_path, "zero.nii", values * 0 + 1)
    data = bytearray(zero.read_bytes())
    data[80:84] = np.float32(0).tobytes()  # pixdim[1]
    zero.write_bytes(bytes(data))
    with pytest.raises(InputImageError, match="voxel size of .*zero or not a number"):
        read_ct(zero)
    nans = _nifti(tmp_path, "allnan.nii.gz", np.full((8, 8, 8), np.nan, np.float32))
    with pytest.raises(InputImageError, match="512 NaN"):
        read_ct(nans)


def test_a_sheared_grid_or_a_segmentation_given_as_the_ct_is_refused_in_one_line(tmp_path, capsys):
    """A NIfTI whose only valid matrix is sheared is refused by ITK with a message naming its own
    internals, and a NRRD's skewed axes are read by ITK as a direction that is not a rotation:
    both are one line saying what is wrong and what to do. A .seg.nrrd where the CT goes would be
    segmented as a CT of values 0..125: it is refused naming what to give instead."""
    from BoneSegmentationLib.cli import main

    values = np.full((20, 20, 20), -1000, np.int16)
    values[5:15, 5:15, 5:15] = 800
    sheared = _nifti(tmp_path, "sheared.nii", values)
    data = bytearray(sheared.read_bytes())
    data[252:254] = struct.pack("<h", 0)  # qform_code: no qform to fall back on
    data[254:256] = struct.pack("<h", 1)  # sform_code: scanner anatomy
    data[280:328] = struct.pack("<12f", 2, 0.8, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0)  # x leans on y
    sheared.write_bytes(bytes(data))
    header = (b"NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 20 20 20\n"
              b"space directions: (2,0,0) (0.8,2,0) (0,0,2)\nspace origin: (0,0,0)\nendian: little\n"
              b"encoding: raw\n\n")
    skewed = tmp_path / "skewed.nrrd"
    skewed.write_bytes(header + values.astype("<i2").tobytes())
    segmentation = tmp_path / "bones.seg.nrrd"  # a segmentation given where the CT goes
    sitk.WriteImage(sitk.GetImageFromArray((values > 0).astype(np.uint8)), str(segmentation))
    assert main(["segment", str(segmentation), "-o", str(tmp_path / "again.nii.gz"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a Slicer segmentation (.seg.nrrd), not a CT" in err
    for path in (sheared, skewed):
        out = tmp_path / f"{path.stem}-bones.nii.gz"
        assert main(["segment", str(path), "-o", str(out), "-q"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and path.name in err, err
        assert "sheared or skewed" in err and "resample the scan" in err and "0x" not in err
        assert not out.exists()


def test_a_short_write_fails_loudly_and_replaces_nothing(tmp_path, monkeypatch, capsys, random_model_file):
    """SimpleITK reports success on a full disk and leaves a short file; the stand-in below writes
    the real file and then cuts it, as a full disk does."""
    from BoneSegmentationLib.cli import main
    from BoneSegmentationLib.core import imageio

    real_write = sitk.WriteImage

    def full_disk(image, name, *args, **kwargs):
        real_write(image, name, *args, **kwargs)
        data = Path(name).read_bytes()
        Path(name).write_bytes(data[: len(data) // 3])

    ct = _small_ct(tmp_path / "ct.nii.gz")
    out = tmp_path / "labels.nii.gz"
    out.write_bytes(b"previous result")
    monkeypatch.setattr(imageio.sitk, "WriteImage", full_disk)
    rc = main(["segment", str(ct), "-o", str(out), "--model", str(random_model_file), "--overwrite", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: cannot write") and "incomplete" in err[-1]
    assert out.read_bytes() == b"previous result"
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_enospc_from_python_writes_is_one_line(tmp_path, monkeypatch, capsys):
    import errno

    from BoneSegmentationLib.cli import main
    from BoneSegmentationLib.training import dataset

    def no_space(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(dataset, "atomic_write_text", no_space)
    ct = _small_ct(tmp_path / "ct.nii.gz")
    lab = sitk.GetImageFromArray(np.zeros((16, 16, 16), np.uint8))
    lab.SetSpacing((4.0, 4.0, 4.0))
    sitk.WriteImage(lab, str(tmp_path / "lab.nii.gz"))
    assert main(["dataset", "add", str(tmp_path / "d"), "--image", str(ct), "--labels", str(tmp_path / "lab.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "the disk is full" in err and len(err.splitlines()) == 1


def test_history_has_each_iteration_once_after_a_resume(tmp_path):
    from BoneSegmentationLib.training.train import write_history

    path = tmp_path / "history.jsonl"
    for it in range(1, 8):  # a run killed at 7, its checkpoint at 5
        write_history(path, {"iteration": it, "loss": 1.0 / it})
    for it in range(6, 10):  # the resumed run repeats 6 and 7
        write_history(path, {"iteration": it, "loss": 0.5 / it})
    write_history(path, {"iteration": 9, "ranks_weights_sha256": ["x"]})  # a note about step 9 stays
    records = [json.loads(line) for line in path.read_text().splitlines()]
    steps = [r["iteration"] for r in records if "loss" in r]
    assert steps == list(range(1, 10)) and records[5]["loss"] == 0.5 / 6 and "ranks_weights_sha256" in records[-1]


def test_a_job_that_cannot_fit_is_refused_with_the_figure_before_allocating(tmp_path, capsys):
    """200^3 voxels of 20 mm: a 4 m cube, 2000^3 voxels at 2 mm. Refused at once, not by a
    numpy allocation traceback minutes later."""
    import time

    from BoneSegmentationLib.cli import main
    from BoneSegmentationLib.inference.budget import check_fits, estimate

    big = sitk.GetImageFromArray(np.random.default_rng(0).integers(-1000, 1500, (200, 200, 200)).astype(np.int16))
    big.SetSpacing((20.0, 20.0, 20.0))
    sitk.WriteImage(big, str(tmp_path / "huge.nii.gz"))
    t0 = time.perf_counter()
    assert main(["segment", str(tmp_path / "huge.nii.gz"), "-o", str(tmp_path / "out.nii.gz"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: this job needs about") and "GiB of memory" in err[-1] and "crop" in err[-1]
    assert time.perf_counter() - t0 < 30 and not (tmp_path / "out.nii.gz").exists()
    small = estimate(big, (20.0, 20.0, 20.0), 126, (64, 64, 64), 12)
    check_fits(small, available=64 * 2 ** 30)  # the same scan at the model's own 20 mm fits
    with pytest.raises(Exception, match="needs about"):
        check_fits(small, available=2 ** 20)


def test_dataset_info_notices_an_image_edited_after_it_was_added(tmp_path):
    from BoneSegmentationLib.training.dataset import image_path, summarise_dataset

    ct = sitk.GetImageFromArray(np.random.default_rng(0).integers(-1000, 1500, (12, 12, 12)).astype(np.int16))
    lab = sitk.GetImageFromArray(np.zeros((12, 12, 12), np.uint8))
    lab[3, 3, 3] = 1
    add_case(tmp_path / "d", ct, lab, source_name="scan.nii.gz")
    assert not [w for w in summarise_dataset(tmp_path / "d", min_cases=0)["warnings"] if "changed" in w]
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((12, 12, 12), np.int16)), str(image_path(tmp_path / "d", "scan_000")))
    warnings = summarise_dataset(tmp_path / "d", min_cases=0)["warnings"]
    assert any("scan_000: the image changed since it was added" in w for w in warnings)


def test_dicom_series_with_a_missing_slice_is_refused_in_one_line(tmp_path, capsys):
    import shutil

    from BoneSegmentationLib.cli import main
    from conftest import REAL_DATA

    source = REAL_DATA / "ts_thorax_dicom"
    if not source.is_dir():
        pytest.skip("real DICOM series not present")
    files = sorted(source.iterdir())
    series = tmp_path / "series"
    series.mkdir()
    reader = sitk.ImageFileReader()
    by_position = []
    for f in files:
        reader.SetFileName(str(f))
        reader.ReadImageInformation()
        by_position.append((float(reader.GetMetaData("0020|0032").split("\\")[2]), f))
    by_position.sort()
    for k, (_, f) in enumerate(by_position):
        if k != len(by_position) // 2:  # drop one slice in the middle
            shutil.copy(f, series / f.name)
    assert main(["segment", str(series), "-o", str(tmp_path / "out.nii.gz"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "uneven slice spacing" in err and "missing" in err and len(err.splitlines()) == 1


def test_outputs_get_the_users_umask_not_0600(tmp_path):
    from BoneSegmentationLib.core.imageio import write_image

    old = os.umask(0o022)
    try:
        path = write_image(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.uint8)), tmp_path / "x.nii.gz")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # a colleague or a shared nnU-Net folder can read it


def test_checkpoint_with_flipped_bytes_is_refused(tmp_path):
    torch.save({"model": {"w": torch.arange(100000, dtype=torch.float32)}, "iteration": 3}, tmp_path / "checkpoint.pt")
    data = bytearray((tmp_path / "checkpoint.pt").read_bytes())
    with zipfile.ZipFile(tmp_path / "checkpoint.pt") as zf:
        member = max(zf.infolist(), key=lambda i: i.file_size)
        start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    for k in range(64):
        data[start + 1000 + k] ^= 0xFF
    (tmp_path / "checkpoint.pt").write_bytes(bytes(data))
    with pytest.raises(BoneSegmentationError, match="corrupt"):
        load_checkpoint(tmp_path / "checkpoint.pt", "cpu")


@pytest.mark.parametrize("args", [["segment", "x.nii.gz", "-o", "y.nii.gz", "--threads", "-1"],
                                  ["segment", "x.nii.gz", "-o", "y.nii.gz", "--overlap", "2"],
                                  ["segment", "x.nii.gz"], ["no-such-command"]])
def test_usage_errors_are_one_line_with_exit_2(args):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "BoneSegmentationLib", *args], capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "error:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_output_folder_is_refused_before_any_work(tmp_path, capsys):
    from BoneSegmentationLib.cli import main

    ct = _small_ct(tmp_path / "ct.nii.gz")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["segment", str(ct), "-o", str(locked / "out.nii.gz"), "-q"]) == 2
    finally:
        locked.chmod(0o755)
    err = capsys.readouterr().err.strip()
    assert "is not writable" in err and len(err.splitlines()) == 1


def _declaring(tmp_path: Path, name: str, size: tuple[int, int, int]) -> Path:
    """A small real image file whose header then declares ``size`` voxels (the data left as they were)."""
    path, plain = tmp_path / name, tmp_path / name.removesuffix(".gz")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.int16)), str(plain), False)
    data = plain.read_bytes()
    if name.endswith(".nrrd"):
        data = data.replace(b"sizes: 4 4 4", f"sizes: {size[0]} {size[1]} {size[2]}".encode())
    else:  # NIfTI-1: dim[1..3] are int16 at bytes 42-47
        data = data[:42] + struct.pack("<3h", *size) + data[48:]
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


@pytest.mark.parametrize("name", ["ct.nrrd", "ct.nii", "ct.nii.gz"])
def test_a_header_declaring_more_than_memory_is_refused_before_reading(tmp_path, name, capsys):
    """A few bytes of header can promise terabytes (a compressed file inflates a thousandfold): the
    declared size is read against the memory free before a voxel is, in one line."""
    from BoneSegmentationLib.cli import main
    from BoneSegmentationLib.core.errors import InputImageError
    from BoneSegmentationLib.core.imageio import check_declared_size

    path = _declaring(tmp_path, name, (30000, 30000, 30000) if name.endswith(".nrrd") else (32000, 32000, 32000))
    assert main(["segment", str(path), "-o", str(tmp_path / "out.nii.gz"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "header declares" in err and "GiB of memory free" in err
    assert not (tmp_path / "out.nii.gz").exists()
    modest = _declaring(tmp_path, "modest_" + name, (512, 512, 400))  # 200 MiB: a CT
    check_declared_size(modest, available=8 * 2 ** 30)
    with pytest.raises(InputImageError, match=r"512 x 512 x 400 voxels \(0\.2 GiB\), more than the 0\.1 GiB"):
        check_declared_size(modest, available=2 ** 30 // 8)


def test_a_shared_dataset_whose_image_declares_terabytes_is_refused_in_one_line(tmp_path):
    """A dataset from elsewhere is untrusted: its files are read through the same checks as a CT."""
    from BoneSegmentationLib.core.errors import InputImageError
    from BoneSegmentationLib.training.dataset import image_path
    from BoneSegmentationLib.training.train import load_dataset

    ct = sitk.GetImageFromArray(np.random.default_rng(0).integers(-1000, 1500, (12, 12, 12)).astype(np.int16))
    lab = sitk.GetImageFromArray(np.zeros((12, 12, 12), np.uint8))
    lab[3, 3, 3] = 1
    add_case(tmp_path / "d", ct, lab, source_name="scan.nii.gz")
    assert len(load_dataset(tmp_path / "d", 4.0)) == 1
    image_path(tmp_path / "d", "scan_000").write_bytes(_declaring(tmp_path, "big.nii.gz", (32000, 32000, 32000)).read_bytes())
    with pytest.raises(InputImageError, match="header declares 32000 x 32000 x 32000 voxels") as e:
        load_dataset(tmp_path / "d", 4.0)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("field, value, message", [
    ("Segment0_Layer", "3", "name a layer the file does not hold"),
    ("Segment0_LabelValue", "one", "has no usable label value or layer"),
    ("Segment0_ID", "tumour", "segments matching no bone of the table: tumour"),
    ("Segment0_LabelValue", "0", "has the label value 0, which is background"),
    ("Segment1_LabelValue", "1", "overlapping segments (a voxel can belong to one bone only): Left femur / "),
])
def test_a_seg_nrrd_whose_header_does_not_describe_its_voxels_is_one_line(tmp_path, capsys, field, value, message):
    """A .seg.nrrd's header says which bone each stored value is; a header that names a layer the
    file lacks, a value that is not a number or is the background, one value for two bones, or a
    segment that is no bone is refused in one line."""
    from BoneSegmentationLib.cli import main

    image = sitk.GetImageFromArray(np.pad(np.ones((6, 6, 6), np.uint8), 2))
    fields = {"Segment0_ID": "femur_left", "Segment0_Name": "Left femur", "Segment0_LabelValue": "1",
              "Segment0_Layer": "0", "Segment1_ID": "femur_right", "Segment1_Name": "Right femur",
              "Segment1_LabelValue": "2", "Segment1_Layer": "0"}
    fields[field] = value
    fields["Segment0_Name"] = fields["Segment0_ID"] if field == "Segment0_ID" else fields["Segment0_Name"]
    for key, text in fields.items():
        image.SetMetaData(key, text)
    path = tmp_path / "bones.seg.nrrd"
    sitk.WriteImage(image, str(path))
    assert main(["meshes", str(path), "-o", str(tmp_path / "meshes")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "meshes").exists()


def test_a_colour_table_beside_a_label_map_that_names_a_value_twice_is_refused(tmp_path, capsys):
    """The colour table Slicer writes beside an exported label map decides which bone each value is:
    one value named twice (two bones for the same voxels) is refused, not settled by row order."""
    from BoneSegmentationLib.cli import main

    image = sitk.GetImageFromArray(np.pad(np.ones((6, 6, 6), np.uint8), 2))
    sitk.WriteImage(image, str(tmp_path / "Segmentation.nii.gz"))
    header = '"LabelValue","Name","Color_R","Color_G","Color_B","Color_A"\n'
    (tmp_path / "Segmentation.labels.csv").write_text(header + '1,"Left femur",1,2,3,255\n1,"Right femur",1,2,3,255\n')
    assert main(["meshes", str(tmp_path / "Segmentation.nii.gz"), "-o", str(tmp_path / "meshes")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "names the values [1] more than once" in err, err
    (tmp_path / "Segmentation.labels.csv").write_text(header + '1,"Left femur",1,2,3,255\n')
    assert main(["meshes", str(tmp_path / "Segmentation.nii.gz"), "-o", str(tmp_path / "meshes")]) == 0
    assert (tmp_path / "meshes").is_dir()  # the same file with a sound table: one bone, its mesh written
