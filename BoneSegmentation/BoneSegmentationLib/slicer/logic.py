"""What the Slicer module does, without Qt: segment a volume node, fill a segmentation node,
run the work in a background process that the GUI polls, check dependencies.

The module's ``BoneSegmentationLogic`` (``BoneSegmentation.py``) inherits this class, so the
same code runs in Slicer, from Slicer's Python console, and in CI against ``slicer-core``.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import SimpleITK as sitk

from ..core.bones import default_table
from ..core.errors import BoneSegmentationError
from ..core.files import lps_to_ras
from ..core.imageio import read_image
from ..export.meshes import DEFAULT_SMOOTHING, export_meshes
from ..inference.options import InferenceOptions
from ..inference.review import ReviewItem
from ..model.registry import resolve_model
from ..training.corrections import GeometryMismatchError, add_case
from ..training.dataset import summarise_dataset
from ..synthetic.phantom import DEMO_SEED, make_phantom
from ..training.plan import finetune_run
from . import environment
from .background import BackgroundSegmentation, BackgroundTraining
from .environment import missing_dependencies  # noqa: F401  (the module file imports it from here)
from .nodes import (SLICER_SURFACE_SMOOTHING, add_closed_surfaces, image_to_volume_node, labels_to_segmentation_node,
                    map_segments, off_grid_segments, register_surface_rules, segmentation_node_to_labels,
                    volume_node_to_image)
from .prediction_cache import labels_digest, load_prediction, store_prediction

SAMPLE_NAME = "Bone phantom CT"
SAMPLE_SEED = DEMO_SEED  # a held-out phantom: training uses seeds 1000 and above

LABELS_DIGEST_ATTRIBUTE = "BoneSegmentation.LabelsSHA256"
MODEL_ATTRIBUTE = "BoneSegmentation.Model"
REVIEW_ATTRIBUTE = "BoneSegmentation.Review"

Progress = Callable[[float, str], None]


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
    def segment(self, volume_node, model: Optional[str] = None, options: Optional[InferenceOptions] = None,
                segmentation_node=None, progress: Optional[Progress] = None,
                cancel: Optional[Callable[[], bool]] = None) -> SegmentOutcome:
        from ..inference.segmenter import Segmenter  # needs PyTorch, which the panel may install later
        from ..model.modelfile import load_model

        t0 = time.perf_counter()
        image = volume_node_to_image(volume_node)
        loaded = load_model(resolve_model(model))
        result = Segmenter(loaded, options).segment(image, progress=progress, cancel=cancel)
        t1 = time.perf_counter()
        node = self.show_labels(result.labels, volume_node, segmentation_node, model_label=loaded.label,
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
        return None if c is None else lps_to_ras(c)

    # -- panel helpers ---------------------------------------------------------------------------
    @staticmethod
    def default_parameters() -> dict[str, str]:
        return {"Model": "", **InferenceOptions().to_parameters()}

    @staticmethod
    def options_from_parameters(parameter_node) -> InferenceOptions:
        """The panel's parameter node (strings) as inference options."""
        return InferenceOptions.from_parameters(
            {key: parameter_node.GetParameter(key) for key in InferenceOptions.PARAMETERS.values()})

    @staticmethod
    def options_to_parameters(options: InferenceOptions, parameter_node) -> None:
        for key, value in options.to_parameters().items():
            parameter_node.SetParameter(key, value)

    model_choices = staticmethod(environment.model_choices)
    model_description = staticmethod(environment.model_description)
    device_description = staticmethod(environment.device_description)
    training_device_note = staticmethod(environment.training_device_note)

    # -- meshes and training data --------------------------------------------------------------
    def export_meshes(self, segmentation_node, volume_node, folder: str, fmt: str = "glb", smoothing: float = DEFAULT_SMOOTHING,
                      max_triangles: int = 20000, coordinates: str = "RAS", visible_only: bool = False,
                      gltf_frame: str = "upright", overwrite: bool = False):
        labels = self.labels_from_segmentation(segmentation_node, volume_node)
        bones = None
        if visible_only and segmentation_node.GetDisplayNode() is not None:
            display = segmentation_node.GetDisplayNode()
            mapping = map_segments(segmentation_node)
            bones = [c for seg_id, c in mapping.classes.items() if display.GetSegmentVisibility(seg_id)]
        return export_meshes(labels, Path(folder), fmt=fmt, smoothing=smoothing, max_triangles=max_triangles,
                             coordinates=coordinates, bones=bones, gltf_frame=gltf_frame, overwrite=overwrite)

    def load_sample_phantom(self, seed: int = SAMPLE_SEED, spacing: float = 3.0):
        """The "Bone phantom CT" of Slicer's Sample Data: a synthetic CT made here by the phantom
        generator (no download), so the module can be tried without a CT of one's own."""
        ct = make_phantom(seed, spacing=spacing, partial=False)[0]
        return image_to_volume_node(ct, self.scene, SAMPLE_NAME)

    def start_training(self, dataset: str, model: Optional[str], iterations: int,
                       run_dir: Optional[str] = None) -> BackgroundTraining:
        parent = str(resolve_model(model, allow_download=False))
        run, name, stamp = finetune_run(Path(dataset), parent, Path(run_dir) if run_dir else None)
        args = ["train", str(dataset), "-o", str(run), "--init", parent, "--iterations", str(iterations),
                "--register", "--name", name, "--model-version", stamp,
                "--description", f"fine-tuned from {Path(parent).name} on {Path(dataset).name}"]
        job = BackgroundTraining(run, args, iterations)
        job.model_path = run / f"{name}.pt"
        return job

    def finish_training(self, job: BackgroundTraining) -> str:
        if job.returncode != 0:
            return f"Training stopped: {job.error or 'exit ' + str(job.returncode)}"
        if job.model_path is None or not job.model_path.is_file():
            return f"Stopped at iteration {job.last_record.get('iteration', '?')}; Retrain again to resume."
        return f"New model {job.model_path.name} registered; it is now in the model selector."

    # -- background process (keeps Slicer's GUI responsive; Cancel kills it) -------------------
    def start_background(self, volume_node, model: Optional[str] = None,
                         options: Optional[InferenceOptions] = None) -> BackgroundSegmentation:
        workdir = Path(tempfile.mkdtemp(prefix="BoneSegmentation-"))
        image = volume_node_to_image(volume_node)
        sitk.WriteImage(image, str(workdir / "input.nrrd"))
        return BackgroundSegmentation(workdir, volume_node, model, options or InferenceOptions())

    def finish_background(self, job: BackgroundSegmentation, segmentation_node=None) -> SegmentOutcome:
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


def _source_name(volume_node) -> str:
    storage = volume_node.GetStorageNode()
    name = storage.GetFileName() if storage is not None else ""
    return Path(name).name if name else volume_node.GetName()


def volume_from_file(path: str, scene, name: Optional[str] = None):
    """Load a CT file or DICOM folder into a scalar volume node through the library's reader."""
    return image_to_volume_node(read_image(path), scene, name or Path(path).name.split(".")[0])


def bone_names() -> list[str]:
    return [b.display_name for b in default_table().foreground()]
