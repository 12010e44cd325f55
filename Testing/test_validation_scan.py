"""The real validation scan's fetcher against a real HTTP server on 127.0.0.1, and its figures."""

import hashlib
import http.server
import io
import tarfile
import threading

import numpy as np
import pytest
import SimpleITK as sitk

from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.core.errors import DownloadError
from BoneSegmentationLib.evaluation.validation_scan import (
    ArchiveMember, ValidationSource, fetch_validation_scan, measure, measure_slabs, slab_starts)

ROOT = "pkg/tests/"
NAMES = ("chest_ct.nii.gz", "heart.nii.gz", "aorta.nii.gz", "vertebra_T12.nii.gz")


def _volume(array, dtype):
    image = sitk.GetImageFromArray(array.astype(dtype))
    image.SetSpacing((1.5, 1.5, 1.5))
    image.SetOrigin((-10.0, 20.0, 500.0))
    return image


def _masks():
    shape = (12, 16, 20)
    heart, aorta, t12 = (np.zeros(shape, np.uint8) for _ in range(3))
    heart[2:6, 2:8, 2:8] = 1  # 4*6*6 = 144 voxels
    aorta[6:10, 2:6, 12:16] = 1  # 64 voxels
    t12[2:10, 10:14, 2:6] = 1  # 128 voxels
    return heart, aorta, t12


def _nifti_bytes(image, tmp_path, name):
    path = tmp_path / ("src-" + name)
    sitk.WriteImage(image, str(path))
    return path.read_bytes()


@pytest.fixture
def served(tmp_path):
    """A source archive like TotalSegmentator's, with the four files and a member that tries to
    write outside any folder, served with its size and SHA-256."""
    heart, aorta, t12 = _masks()
    ct = np.full(heart.shape, -800.0)
    ct[heart > 0], ct[aorta > 0], ct[t12 > 0] = 450, 350, 300
    contents = dict(zip(NAMES, [_nifti_bytes(_volume(a, t), tmp_path, n) for a, t, n in
                                zip((ct, heart, aorta, t12), (np.int16, np.uint8, np.uint8, np.uint8), NAMES)]))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in [*((ROOT + n, d) for n, d in contents.items()), ("../../escaped.txt", b"x")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    payload = buffer.getvalue()
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    members = tuple(ArchiveMember(ROOT + n, n, hashlib.sha256(d).hexdigest()) for n, d in contents.items())
    source = ValidationSource(url=f"http://127.0.0.1:{httpd.server_address[1]}/pkg.tar.gz", size=len(payload),
                              sha256=hashlib.sha256(payload).hexdigest(), members=members)
    yield source, contents, requests
    httpd.shutdown()


def test_fetch_copies_out_only_the_pinned_files(tmp_path, served):
    source, contents, requests = served
    folder = fetch_validation_scan(tmp_path / "scan", source)
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES)  # archive and lock gone, nothing else
    for name, data in contents.items():
        assert (folder / name).read_bytes() == data
    assert not list(tmp_path.rglob("escaped.txt"))
    assert fetch_validation_scan(tmp_path / "scan", source) == folder
    assert len(requests) == 1  # verified files are not fetched again


def test_a_member_that_is_not_the_pinned_file_is_refused(tmp_path, served):
    source, _, _ = served
    wrong = source.members[0].__class__(source.members[0].path, source.members[0].name, "0" * 64)
    bad = ValidationSource(source.url, source.size, source.sha256, (wrong, *source.members[1:]))
    with pytest.raises(DownloadError, match="does not match its pinned SHA-256"):
        fetch_validation_scan(tmp_path / "scan", bad)
    assert not (tmp_path / "scan" / "chest_ct.nii.gz").exists()


def test_an_archive_that_is_not_the_pinned_one_is_refused(tmp_path, served):
    source, _, _ = served
    bad = ValidationSource(source.url, source.size, "f" * 64, source.members)
    with pytest.raises(DownloadError, match="does not match the pinned archive"):
        fetch_validation_scan(tmp_path / "scan", bad)
    assert not [p for p in (tmp_path / "scan").iterdir() if p.suffix in (".gz", ".nii")]


def test_figures_on_known_labels(tmp_path, served):
    source, _, _ = served
    folder = fetch_validation_scan(tmp_path / "scan", source)
    table = default_table()
    heart, aorta, t12 = _masks()
    labels = np.zeros(heart.shape, np.uint8)
    labels[2:6, 2:8, 2:5] = table.by_name("vertebra_T5").index  # 72 of the heart's 144 voxels
    labels[2:10, 10:14, 2:4] = table.by_name("vertebra_T12").index  # half of T12 named right
    labels[2:10, 10:14, 4:6] = table.by_name("vertebra_T11").index  # the other half bone, misnamed
    f = measure(_volume(labels, np.uint8), folder, table)
    assert f.heart_called_bone == pytest.approx(0.5)
    assert f.aorta_called_bone == 0.0
    assert f.vessels_called_bone == pytest.approx(72 / 208)
    assert f.t12_dice == pytest.approx(2 * 64 / (64 + 128))
    assert f.t12_found == pytest.approx(1.0)


def test_slab_starts_cover_the_scan_half_overlapping():
    assert slab_starts(12, 4) == [0, 2, 4, 6, 8]
    assert slab_starts(191, 27) == [0, 13, 26, 39, 52, 65, 78, 91, 104, 117, 130, 143, 156, 164]
    assert slab_starts(5, 5) == [0]
    with pytest.raises(ValueError, match="does not fit"):
        slab_starts(3, 4)


def _threshold(hu):
    """A real segmenter of the simplest kind: bone (label 1) above ``hu``, on the input's grid."""
    def segment(ct):
        labels = sitk.GetImageFromArray((sitk.GetArrayFromImage(ct) > hu).astype(np.uint8))
        labels.CopyInformation(ct)
        return labels
    return segment


def test_slab_figures_of_a_reading_that_needs_no_context(tmp_path, served):
    source, _, _ = served
    folder = fetch_validation_scan(tmp_path / "scan", source)
    ct = sitk.ReadImage(str(folder / "chest_ct.nii.gz"))
    f = measure_slabs(_threshold(200), ct, folder, slab_mm=6.0)  # 4 slices of 1.5 mm
    assert f.slabs == 5
    assert f.agreement == f.lowest_agreement == pytest.approx(1.0)
    assert f.bone_kept == pytest.approx(1.0)
    assert f.vessels_called_bone == f.whole_vessels_called_bone == pytest.approx(1.0)
    assert f.t12_found == pytest.approx(1.0)


def test_slab_figures_of_a_reading_that_loses_bone_in_slabs(tmp_path, served):
    """Read whole, the heart (450 HU), aorta (350) and T12 (300) are all called bone; read as a
    slab only what is above 400 HU: the slabs keep the heart alone."""
    source, _, _ = served
    folder = fetch_validation_scan(tmp_path / "scan", source)
    ct = sitk.ReadImage(str(folder / "chest_ct.nii.gz"))
    whole, slab = _threshold(200), _threshold(400)
    f = measure_slabs(lambda image: (whole if image.GetSize()[2] == ct.GetSize()[2] else slab)(image),
                      ct, folder, slab_mm=6.0)
    heart, aorta, t12 = (m.astype(bool) for m in _masks())
    slabs = [slice(z, z + 4) for z in (0, 2, 4, 6, 8)]
    in_slabs = lambda m: sum(int(m[s].sum()) for s in slabs)  # noqa: E731
    assert f.vessels_called_bone == pytest.approx(in_slabs(heart) / in_slabs(heart | aorta))
    assert f.whole_vessels_called_bone == pytest.approx(1.0)
    assert f.t12_found == 0.0
    assert f.bone_kept == pytest.approx(in_slabs(heart) / in_slabs(heart | aorta | t12))
    per_slab = [2 * heart[s].sum() / (heart[s].sum() + (heart | aorta | t12)[s].sum()) for s in slabs]
    assert f.agreement == pytest.approx(np.mean(per_slab))
    assert f.lowest_agreement == pytest.approx(min(per_slab)) and f.lowest_agreement == 0.0  # slab 6-10 finds nothing


def test_slab_figures_reuse_a_whole_scan_reading_already_made(tmp_path, served):
    """The tool reads the whole scan once for both tables: given that reading, the slabs are the
    only readings made, and the figures are the same."""
    source, _, _ = served
    folder = fetch_validation_scan(tmp_path / "scan", source)
    ct = sitk.ReadImage(str(folder / "chest_ct.nii.gz"))
    seen = []

    def segment(image):
        seen.append(image.GetSize()[2])
        return _threshold(200)(image)
    fresh = measure_slabs(segment, ct, folder, slab_mm=6.0)
    assert seen.count(ct.GetSize()[2]) == 1
    seen.clear()
    reused = measure_slabs(segment, ct, folder, slab_mm=6.0, whole=_threshold(200)(ct))
    assert seen == [4] * 5  # five slabs of four slices, no whole-scan reading
    assert reused == fresh
