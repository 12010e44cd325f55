"""What the Slicer module does, without Qt: segment a volume node, fill a segmentation node,
run the work in a background process that the GUI polls, check dependencies.

The module's ``BoneSegmentationLogic`` (``BoneSegmentation.py``) inherits this class, so the
same code runs in Slicer, from Slicer's Python console, and in CI against ``slicer-core``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from ..core.bones import default_table
from ..export.meshes import DEFAULT_SMOOTHING
from ..training.dataset import atomic_write_text
from ..core.errors import BoneSegmentationError, Cancelled
from ..inference.review import ReviewItem
from ..slicer.nodes import (SLICER_SURFACE_SMOOTHING, add_closed_surfaces, image_to_volume_node,
                           labels_to_segmentation_node, off_grid_segments, register_surface_rules,
                           segmentation_node_to_labels,
                           volume_node_to_image)

LABELS_DIGEST_ATTRIBUTE = "BoneSegmentation.LabelsSHA256"
MODEL_ATTRIBUTE = "BoneSegmentation.Model"
REVIEW_ATTRIBUTE = "BoneSegmentation.Review"
REQUIREMENTS = {"torch": "torch", "SimpleITK": "SimpleITK", "scipy": "scipy"}  # import name -> pip name

Progress = Callable[[float, str], None]


def missing_dependencies() -> list[str]:
    """pip names of what the library needs and cannot import (torch first: it is the big one)."""
    return [pip for module, pip in REQUIREMENTS.items() if importlib.util.find_spec(module) is None]


def labels_digest(labels: sitk.Image) -> str:
    return hashlib.sha256(np.ascontiguousarray(sitk.GetArrayViewFromImage(labels)).tobytes()).hexdigest()


@dataclass
class SegmentOutcome:
    segmentation_node: object
    labels: sitk.Image
    review: list[ReviewItem] = field(default_factory=list)
    seconds: float = 0.0
    node_seconds: float = 0.0
    device: str = ""
    warnings: list[str] = field(default_factory=list)


class SlicerSegmentationLogic:
    """Volume node in, segmentation node with 125 named, coloured, coded bones out."""

    def __init__(self, scene=None):
        self._scene = scene
        register_surface_rules()  # Slicer does this at start-up; bare slicer-core (console, CI) does not

    @property
    def scene(self):
        if self._scene is not None:
            return self._scene
        import slicer
        return slicer.mrmlScene

    # -- one call, in this process (console, tests) --------------------------------------------
    def segment(self, volume_node, model: Optional[str] = None, device: str = "auto", overlap: float = 0.5,
                segmentation_node=None, progress: Optional[Progress] = None,
                cancel: Optional[Callable[[], bool]] = None, stitch: int = 1,
                mirror: Optional[bool] = None) -> SegmentOutcome:
        from ..model.modelfile import load_model
        from ..model.registry import resolve_model
        from ..inference.segmenter import segment_image

        t0 = time.perf_counter()
        image = volume_node_to_image(volume_node)
        loaded = load_model(resolve_model(model))
        result = segment_image(image, loaded, device=device, overlap=overlap, progress=progress, cancel=cancel,
                               stitch=stitch, mirror=mirror)
        t1 = time.perf_counter()
        node = self.show_labels(result.labels, volume_node, segmentation_node,
                                model_label=f"{loaded.metadata['name']} {loaded.metadata['version']}",
                                review=result.review)
        return SegmentOutcome(node, result.labels, result.review, time.perf_counter() - t0,
                              time.perf_counter() - t1, result.device, result.warnings)

    def show_labels(self, labels: sitk.Image, volume_node, segmentation_node=None, model_label: str = "",
                    review: Optional[list[ReviewItem]] = None):
        """Fill (or create) a segmentation node from a label map on the volume's grid, 3D surfaces
        included (one multi-label pass, about 5x faster than Slicer converting bone by bone)."""
        if segmentation_node is None:
            segmentation_node = self.scene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", f"{volume_node.GetName()} bones")
        labels_to_segmentation_node(labels, segmentation_node, reference_volume_node=volume_node)
        add_closed_surfaces(segmentation_node, labels, smoothing=SLICER_SURFACE_SMOOTHING)
        segmentation_node.SetNodeReferenceID("BoneSegmentation.InputVolume", volume_node.GetID())
        digest = labels_digest(labels)
        store_prediction(labels, digest)
        segmentation_node.SetAttribute(LABELS_DIGEST_ATTRIBUTE, digest)
        segmentation_node.SetAttribute(MODEL_ATTRIBUTE, model_label)
        if review is not None:
            segmentation_node.SetAttribute(REVIEW_ATTRIBUTE, json.dumps(
                [{"id": it.name, "name": it.display_name, "reasons": it.reasons, "score": it.score,
                  "centroid_lps_mm": it.centroid_lps_mm} for it in review if it.reasons]))
        if segmentation_node.GetDisplayNode() is None:
            segmentation_node.CreateDefaultDisplayNodes()
        return segmentation_node

    def labels_from_segmentation(self, segmentation_node, volume_node) -> sitk.Image:
        """The (possibly edited) segmentation as a label map on the volume's grid, by segment ID."""
        return segmentation_node_to_labels(segmentation_node, volume_node_to_image(volume_node))

    def is_edited(self, segmentation_node, volume_node) -> bool:
        """True when the node no longer holds what this module wrote into it (ask before replacing)."""
        digest = segmentation_node.GetAttribute(LABELS_DIGEST_ATTRIBUTE)
        if segmentation_node.GetSegmentation().GetNumberOfSegments() == 0:
            return False
        if not digest:
            return True  # made by hand or by another tool
        try:
            return labels_digest(self.labels_from_segmentation(segmentation_node, volume_node)) != digest
        except BoneSegmentationError:
            return True

    def add_training_case(self, dataset: str, volume_node, segmentation_node, labelled=None,
                          case_id: Optional[str] = None, overwrite: bool = False) -> dict:
        """The (corrected) segmentation of ``volume_node`` as a new case of ``dataset``; returns its
        manifest. Refuses segments that match no bone, overlap, or lie off the CT's grid."""
        from ..training.corrections import GeometryMismatchError, add_case

        image = volume_node_to_image(volume_node)
        off = off_grid_segments(segmentation_node, image)
        if off:
            raise GeometryMismatchError(
                f"segments not on the CT's voxel grid: {', '.join(off[:10])}{' ...' if len(off) > 10 else ''}. "
                "Choose the CT as the segmentation's geometry (Segment Editor > Specify geometry) and repaint, "
                "or segment this CT again")
        labels = segmentation_node_to_labels(segmentation_node, image)
        prior = load_prediction(segmentation_node.GetAttribute(LABELS_DIGEST_ATTRIBUTE))
        return add_case(dataset, image, labels, source_name=_source_name(volume_node), prior=prior,
                        prior_model=segmentation_node.GetAttribute(MODEL_ATTRIBUTE) or "", labelled=labelled,
                        case_id=case_id, overwrite=overwrite)

    @staticmethod
    def dataset_summary(dataset: str) -> str:
        """The dataset view of the Training data panel, as text."""
        from ..training.dataset import summarise_dataset
        s = summarise_dataset(Path(dataset))
        lines = [f"{len(s['cases'])} cases"]
        for case in s["cases"]:
            labelled = "all bones" if case["labelled"] == "all" else f"{len(case['labelled'])} bones (partial)"
            edited = "" if case["edited"] is None else f", {len(case['edited'])} edited"
            lines.append(f"  {case['case_id']}: {case['bones']} present, {labelled}{edited}")
        lines += [f"Warning: {w}" for w in s["warnings"]]
        return "\n".join(lines)

    @staticmethod
    def review_items(segmentation_node) -> list[dict]:
        text = segmentation_node.GetAttribute(REVIEW_ATTRIBUTE)
        return json.loads(text) if text else []

    @staticmethod
    def centroid_ras(item: dict) -> Optional[list[float]]:
        c = item.get("centroid_lps_mm")
        return None if c is None else [-c[0], -c[1], c[2]]

    # -- panel helpers ---------------------------------------------------------------------------
    @staticmethod
    def default_parameters() -> dict[str, str]:
        return {"Model": "", "Device": "auto", "Overlap": "0.5", "Stitch": "1", "Mirror": "model"}

    @staticmethod
    def model_choices() -> list[tuple[str, str]]:
        """(label, value) for the model selector: registered models (bundled, cached or remote)."""
        from ..model.registry import DEFAULT_MODEL, load_registry, local_copy
        out = []
        for e in load_registry():
            where = "available" if local_copy(e) else "download on first use"
            default = " (default)" if e.name == DEFAULT_MODEL else ""
            out.append((f"{e.name} {e.version}{default} - {where}", e.name))
        return out

    @staticmethod
    def model_description(model: Optional[str]) -> str:
        from ..model.modelfile import read_metadata
        from ..model.registry import resolve_model
        try:
            meta = read_metadata(resolve_model(model or None, allow_download=False))
        except BoneSegmentationError as e:
            return str(e)
        t = meta.get("training", {})
        return (f"{len(meta['classes']) - 1} bones, {meta['spacing_mm'][0]:g} mm, patch {meta['patch_size'][0]}. "
                f"{meta['description']} Trained on: {t.get('data', '?')}; {t.get('iterations', '?')} iterations"
                f"{'; parent ' + t['parent_model'] if t.get('parent_model') else ''}.")

    @staticmethod
    def device_description() -> str:
        try:
            import torch
        except ImportError:
            return "PyTorch is not installed yet (it will be offered on first use)."
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            return f"CUDA: {p.name}, {p.total_memory / 2**30:.0f} GiB"
        return f"No CUDA GPU: the CPU will be used ({os.cpu_count()} cores)."

    @staticmethod
    def training_device_note() -> str:
        """Empty when a GPU is there, else an honest warning for the confirmation dialog."""
        try:
            import torch
            if torch.cuda.is_available():
                return ""
        except ImportError:
            pass
        return ("No CUDA GPU: training runs on the CPU, typically 1-10 s per iteration; the first "
                "iterations give a measured estimate in the status line.")

    # -- meshes and training data --------------------------------------------------------------
    def export_meshes(self, segmentation_node, volume_node, folder: str, fmt: str = "glb", smoothing: float = DEFAULT_SMOOTHING,
                      max_triangles: int = 20000, coordinates: str = "RAS", visible_only: bool = False):
        from ..export.meshes import export_meshes
        labels = self.labels_from_segmentation(segmentation_node, volume_node)
        bones = None
        if visible_only and segmentation_node.GetDisplayNode() is not None:
            display = segmentation_node.GetDisplayNode()
            from ..slicer.nodes import map_segments
            mapping = map_segments(segmentation_node)
            bones = [c for seg_id, c in mapping.classes.items() if display.GetSegmentVisibility(seg_id)]
        return export_meshes(labels, Path(folder), fmt=fmt, smoothing=smoothing, max_triangles=max_triangles,
                             coordinates=coordinates, bones=bones)

    def start_training(self, dataset: str, model: Optional[str], iterations: int,
                       run_dir: Optional[str] = None) -> "BackgroundTraining":
        from ..model.modelfile import read_metadata
        from ..model.registry import resolve_model
        parent = str(resolve_model(model, allow_download=False))
        run = Path(run_dir) if run_dir else (unfinished_run(Path(dataset), parent) or
                                             Path(dataset) / "runs" / f"finetune-{time.strftime('%Y%m%d-%H%M%S')}")
        run.mkdir(parents=True, exist_ok=True)
        record = run / RUN_RECORD
        if not record.is_file():
            atomic_write_text(record, json.dumps({"parent": parent, "version": time.strftime("%Y%m%d-%H%M%S")}))
        stamp = json.loads(record.read_text(encoding="utf-8"))["version"]
        name = read_metadata(Path(parent))["name"].removesuffix("-finetuned") + "-finetuned"
        # a new name and a dated version: the parent stays in the model selector next to its child
        args = ["train", str(dataset), "-o", str(run), "--init", parent, "--iterations", str(iterations),
                "--register", "--name", name, "--model-version", stamp,
                "--description", f"fine-tuned from {Path(parent).name} on {Path(dataset).name}"]
        job = BackgroundTraining(run, args, iterations)
        job.model_path = run / f"{name}.pt"
        return job

    def finish_training(self, job: "BackgroundTraining") -> str:
        if job.returncode != 0:
            return f"Training stopped: {job.error or 'exit ' + str(job.returncode)}"
        if job.model_path is None or not job.model_path.is_file():
            return f"Stopped at iteration {job.last_record.get('iteration', '?')}; Retrain again to resume."
        return f"New model {job.model_path.name} registered; it is now in the model selector."

    # -- background process (keeps Slicer's GUI responsive; Cancel kills it) -------------------
    def start_background(self, volume_node, model: Optional[str] = None, device: str = "auto",
                         overlap: float = 0.5, stitch: int = 1,
                         mirror: Optional[bool] = None) -> "BackgroundSegmentation":
        workdir = Path(tempfile.mkdtemp(prefix="BoneSegmentation-"))
        image = volume_node_to_image(volume_node)
        sitk.WriteImage(image, str(workdir / "input.nrrd"))
        return BackgroundSegmentation(workdir, volume_node, model, device, overlap, stitch, mirror)

    def finish_background(self, job: "BackgroundSegmentation", segmentation_node=None) -> SegmentOutcome:
        if job.returncode != 0:
            raise BoneSegmentationError(job.error or f"segmentation process failed (exit {job.returncode})")
        labels = sitk.ReadImage(str(job.output))
        review_doc = json.loads(job.review_path.read_text(encoding="utf-8"))
        review = [ReviewItem(**{k: v for k, v in b.items()}) for b in review_doc["bones"]]
        t = time.perf_counter()
        node = self.show_labels(labels, job.volume_node, segmentation_node, review_doc.get("model", ""), review)
        outcome = SegmentOutcome(node, labels, review, job.elapsed, time.perf_counter() - t)
        job.cleanup()
        return outcome


RUN_RECORD = "finetune.json"


def unfinished_run(dataset: Path, parent: str) -> Optional[Path]:
    """The newest fine-tuning run of ``dataset`` from ``parent`` that was stopped before its end
    (a checkpoint, no exported model): Retrain resumes it instead of starting over."""
    runs = sorted((dataset / "runs").glob("finetune-*"), reverse=True) if (dataset / "runs").is_dir() else []
    for run in runs:
        record = run / RUN_RECORD
        if (run / "checkpoint.pt").is_file() and record.is_file() and \
                json.loads(record.read_text(encoding="utf-8")).get("parent") == parent and \
                not any(p.name.endswith("-finetuned.pt") for p in run.glob("*.pt")):
            return run
    return None


def prediction_path(digest: str) -> Path:
    from ..model.registry import cache_dir
    return cache_dir() / "predictions" / f"{digest}.nii.gz"


def store_prediction(labels: sitk.Image, digest: str) -> None:
    """Keep the model's label map (by content digest) so that a later export of the corrected
    segmentation can tell which bones the anatomist changed. About 1 MB per scan."""
    from ..core.imageio import write_image
    path = prediction_path(digest)
    if not path.exists():
        write_image(labels, path)


def load_prediction(digest: Optional[str]) -> Optional[sitk.Image]:
    path = prediction_path(digest) if digest else None
    return sitk.ReadImage(str(path)) if path is not None and path.is_file() else None


def _source_name(volume_node) -> str:
    storage = volume_node.GetStorageNode()
    name = storage.GetFileName() if storage is not None else ""
    return Path(name).name if name else volume_node.GetName()


def python_executable() -> str:
    """Slicer's own Python launcher inside Slicer, else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


class BackgroundProcess:
    """A library command in a child process; ``poll()`` reads its JSON-line progress."""

    kind = "process"

    def __init__(self, workdir: Path, args: list[str], total: Optional[int] = None):
        self.workdir = workdir
        self.total = total
        cmd = [python_executable(), "-m", "BoneSegmentationLib", *args]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[2])] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        self.started = time.perf_counter()
        self.elapsed = 0.0
        self.fraction, self.message, self.error = 0.0, "starting", ""
        self.last_record: dict = {}
        self._steps: list[tuple[int, float]] = []
        self.returncode: Optional[int] = None
        self.stderr_path = workdir / "stderr.txt"
        self._stderr = open(self.stderr_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env,
                                        start_new_session=True)
        os.set_blocking(self.process.stdout.fileno(), False)
        self._buffer = ""

    def poll(self) -> bool:
        """Read progress; True while running. Call from a GUI timer."""
        try:
            chunk = self.process.stdout.read() or ""
        except (BlockingIOError, TypeError):
            chunk = ""
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "progress" in msg:
                self.fraction, self.message = float(msg["progress"]), msg.get("message", "")
            elif "iteration" in msg:  # a training record
                self._training_record(msg)
        code = self.process.poll()
        if code is None:
            return True
        self.returncode = code
        self.elapsed = time.perf_counter() - self.started
        self._stderr.close()
        if code != 0:
            lines = [ln for ln in self.stderr_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            self.error = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "")
        return False

    def _training_record(self, msg: dict) -> None:
        """Progress, loss, validation Dice and a time estimate measured from the iterations so far."""
        self.last_record = msg
        if "seconds" in msg and "val_dice" not in msg:
            self._steps.append((msg["iteration"], msg["seconds"]))
        if self.total:
            self.fraction = min(1.0, msg["iteration"] / self.total)
        self.message = f"iteration {msg['iteration']}" + (f"/{self.total}" if self.total else "") + \
            (f", loss {msg['loss']:.3f}" if "loss" in msg else "") + \
            (f", validation Dice {msg['val_dice']:.3f}" if "val_dice" in msg else "")
        if self.total and len(self._steps) >= 4:
            (i0, s0), (i1, s1) = self._steps[1], self._steps[-1]  # the first iteration includes start-up
            per = (s1 - s0) / max(i1 - i0, 1)
            self.message += f", {per:.1f} s/iteration, about {per * (self.total - i1) / 60:.0f} min left"

    def wait(self, timeout: float = 3600, interval: float = 0.1) -> int:
        deadline = time.monotonic() + timeout
        while self.poll():
            if time.monotonic() > deadline:
                self.cancel()
                raise Cancelled("segmentation took too long and was stopped")
            time.sleep(interval)
        return self.returncode or 0

    def cancel(self) -> None:
        """Stop the child process (and anything it started)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 9)
            except (ProcessLookupError, PermissionError, AttributeError):
                self.process.kill()
            self.process.wait()
        self.returncode = self.process.returncode
        if not self._stderr.closed:
            self._stderr.close()
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


class BackgroundSegmentation(BackgroundProcess):
    kind = "segment"

    def __init__(self, workdir: Path, volume_node, model: Optional[str], device: str, overlap: float,
                 stitch: int = 1, mirror: Optional[bool] = None):
        self.volume_node = volume_node
        self.output = workdir / "bones.nrrd"
        self.review_path = workdir / "bones.review.json"
        args = ["segment", str(workdir / "input.nrrd"), "-o", str(self.output), "--review", str(self.review_path),
                "--device", device, "--overlap", str(overlap), "--stitch", str(stitch), "--progress-json"]
        if mirror is not None:
            args.append("--mirror" if mirror else "--no-mirror")
        super().__init__(workdir, args + (["--model", str(model)] if model else []))


class BackgroundTraining(BackgroundProcess):
    """``bonesegmentation train`` in a child process; ``request_stop()`` makes it save and stop."""

    kind = "train"

    def __init__(self, run_dir: Path, args: list[str], total: int):
        self.run_dir = run_dir
        self.model_path: Optional[Path] = None  # the exported model, once training has finished
        self.stop_file = run_dir / "STOP"
        self.stop_file.unlink(missing_ok=True)
        super().__init__(run_dir, args + ["--stop-file", str(self.stop_file), "--print-every", "1"], total)

    def request_stop(self) -> None:
        self.stop_file.touch()

    def cleanup(self) -> None:  # the run folder holds checkpoints: keep it
        pass


def volume_from_file(path: str, scene, name: Optional[str] = None):
    """Load a CT file or DICOM folder into a scalar volume node through the library's reader."""
    from ..core.imageio import read_image
    return image_to_volume_node(read_image(path), scene, name or Path(path).name.split(".")[0])


def bone_names() -> list[str]:
    return [b.display_name for b in default_table().foreground()]
