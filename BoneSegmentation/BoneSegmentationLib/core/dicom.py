"""A DICOM folder read as one CT volume whose geometry is the acquisition's.

The series' slices are checked and placed by their position tags (``slice_geometry.py``: uneven
steps refused, a gantry tilt regularised); a series of one multi-frame file (Enhanced CT) is read
by its frames' positions (``dicom_frames.py``).
A slice file cut short (a copy stopped half-way) is not listed in its series at all: GDCM cannot
parse it and leaves it out, and a first or last slice lost so leaves no gap for the steps' check.
Such a file (the DICOM preamble, the series' image class, its series' UID in its bytes, and no
header ITK can read) is refused in one line.
A folder that holds no series itself is searched below: a PACS export or a DICOMDIR medium puts
each series in a folder of its own under study folders, and the user gives the top one.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from .errors import InputImageError, itk_reason
from .dicom_frames import CT_MODALITIES, read_dicom_file
from .memory import check_declared_fits
from .slice_geometry import SliceGeometry, check_even_steps, check_one_line, placed_where_scanned

log = logging.getLogger(__name__)

MAX_SUBFOLDERS = 5000  # folders searched below a given folder that holds no series itself


def read_dicom_folder(folder: Path) -> sitk.Image:
    """The largest CT series in ``folder``: a localizer filed in it left out, refused with uneven
    slices or slices off one line, regularised when tilted."""
    reader = sitk.ImageSeriesReader()
    what = f"the DICOM series in {folder}"
    files_per_series = series_files(folder)
    chosen = choose_ct_series(folder, files_per_series)
    files = files_per_series[chosen]
    check_no_damaged_slice(folder, chosen, files, {f for names in files_per_series.values() for f in names})
    if len(files) == 1:  # one multi-frame file (Enhanced CT); ITK's series reader would make it 4D
        return read_dicom_file(Path(files[0]), what)
    geometry = slice_geometry(files)
    if geometry is not None:
        if len(geometry.files) < len(files):
            log.warning("in the DICOM series in %s, %d of %d files have another orientation or size than the "
                        "rest (a localizer?) and were left out", folder, len(files) - len(geometry.files), len(files))
            files = geometry.files
        check_even_steps(what, geometry)
        check_one_line(what, geometry)
    first = sitk.ImageFileReader()
    first.SetFileName(files[0])
    try:
        first.ReadImageInformation()
        check_declared_fits(what, first, slices=len(files))
    except RuntimeError:
        pass  # the series reader says why
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise InputImageError(f"cannot read {what}: {itk_reason(e)}") from None
    if geometry is not None:
        image = placed_where_scanned(image, geometry, what)
    return image




@contextlib.contextmanager
def itk_warnings_off():
    """ITK's GDCM series search prints "No Series were found" on the terminal for every folder
    without DICOM files; our own one-line error or log says what matters."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def series_ids(folder: Path | str) -> tuple[str, ...]:
    """The Series Instance UIDs of the DICOM files in ``folder`` itself, quietly."""
    with itk_warnings_off():
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def series_files(folder: Path) -> dict[str, list[str]]:
    """Each DICOM series' files (by Series Instance UID, in the order ITK stacks them): the folder's
    own, or, when it holds none, those in the folders below it, each series gathered across them
    (a series split over two folders is still one volume). Refused in one line when there is none."""
    reader = sitk.ImageSeriesReader()
    series = series_ids(folder)
    if series:
        return {s: list(reader.GetGDCMSeriesFileNames(str(folder), s)) for s in series}
    below = folders_with_series(folder)
    if not below:
        raise InputImageError(f"no DICOM series found in folder {folder} or the folders below it; give the "
                              "folder that holds the CT's DICOM files, or a NIfTI/NRRD/MHA file")
    folders_of: dict[str, list[Path]] = {}
    for sub in below:
        for uid in series_ids(sub):
            folders_of.setdefault(uid, []).append(sub)
    log.info("folder %s holds no DICOM files itself; read %d series from %d folders below it",
             folder, len(folders_of), len(below))
    return {uid: in_stacking_order([list(reader.GetGDCMSeriesFileNames(str(sub), uid)) for sub in subs])
            for uid, subs in sorted(folders_of.items())}


def in_stacking_order(parts: list[list[str]]) -> list[str]:
    """One series' files listed folder by folder (each in GDCM's order) as one list in GDCM's
    order: by position along the slices' normal, the way the first part runs. Not GDCM's own
    recursive search, which follows links into folders (a link to a parent would list the files
    again and again). Parts whose files lack position tags are joined as they come (the series
    reader then decides, as for any series)."""
    files = [name for part in parts for name in part]
    if len(parts) == 1 or len(files) < 2:
        return files
    tags = slice_tags(files)
    if tags is None:
        return files
    try:
        along = [float(np.array(position) @ np.cross(orientation[:3], orientation[3:]))
                 for position, orientation, _ in tags]
    except ValueError:  # not three and six numbers
        return files
    first = next((part for part in parts if len(part) > 1), None)
    descending = first is not None and along[files.index(first[0])] > along[files.index(first[-1])]
    return [name for _, name in sorted(zip(along, files), key=lambda pair: pair[0], reverse=descending)]


def folders_with_series(folder: Path) -> list[Path]:
    """The folders below ``folder`` that hold a DICOM series, searched top-down without
    following links, at most ``MAX_SUBFOLDERS`` of them (a whole PACS export of many studies
    deserves a narrower choice, and says so)."""
    found, seen = [], 0
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        seen += 1
        if seen > MAX_SUBFOLDERS:
            raise InputImageError(f"folder {folder} has more than {MAX_SUBFOLDERS} folders below it and holds no "
                                  "DICOM files itself; give the folder of the CT series (or of its study)")
        if Path(root) != Path(folder) and files and series_ids(root):
            found.append(Path(root))
    return found


def series_tag(first_file: str, tag: str) -> str:
    """A tag's value in a series' first file, stripped ("" when absent or unreadable)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(first_file)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return ""
    return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""


def series_modality(first_file: str) -> str:
    """A series' Modality (0008,0060), upper case, from its first file ("" when absent or unreadable)."""
    return series_tag(first_file, "0008|0060").upper()


def slices_in(files: list[str]) -> int:
    """How many slices a series holds: one per file, or a multi-frame file's frames."""
    if len(files) != 1:
        return len(files)
    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return 1
    size = reader.GetSize()
    return size[2] if len(size) > 2 else 1


def check_one_study(folder: Path, files_per_series: dict[str, list[str]], ct: list[str]) -> None:
    """Refuse CT series of more than one study (Study Instance UID) under one folder: an export of
    several patients or visits, where taking the largest would segment one of them and name the
    result after the folder, unseen."""
    study_of = {s: series_tag(files_per_series[s][0], "0020|000d") for s in ct}
    studies = sorted({uid for uid in study_of.values() if uid})
    if len(studies) > 1:
        places = sorted({os.path.relpath(Path(files_per_series[s][0]).parent, folder) for s in ct})
        raise InputImageError(f"folder {folder} holds CT series of {len(studies)} studies (patients or visits; in "
                              f"{', '.join(places[:4])}{', ...' if len(places) > 4 else ''}); give the folder of "
                              "one study or series, or segment each one")


def choose_ct_series(folder: Path, files_per_series: dict[str, list[str]]) -> str:
    """The largest CT series of a folder: an exported study holds scouts, MR, PET or dose reports
    beside its CT, and the largest series is not always the CT (a PET/CT's PET can have more
    slices). A folder with no CT series is refused, naming what it holds."""
    modality = {s: series_modality(files[0]) for s, files in files_per_series.items()}
    ct = [s for s in files_per_series if modality[s] in CT_MODALITIES]
    if not ct:
        held = ", ".join(f"{modality[s]} ({len(files)} files)" for s, files in files_per_series.items())
        raise InputImageError(f"no CT series in {folder}: its DICOM series are {held}; BoneSegmentation "
                              "segments CT, so choose a folder with the CT series")
    check_one_study(folder, files_per_series, ct)
    slices = {s: slices_in(files_per_series[s]) for s in ct}
    chosen = max(ct, key=slices.get)
    if len(files_per_series) > 1:
        others = sorted({modality[s] or "no modality" for s in files_per_series if s != chosen})
        log.warning("folder %s holds %d DICOM series (also %s); using the largest CT series (%s, %d slices)",
                    folder, len(files_per_series), ", ".join(others), chosen or "the one without a series UID",
                    slices[chosen])
    return chosen


DICOM_PREAMBLE = 128  # bytes before the "DICM" magic of a DICOM Part 10 file


def media_storage_class(path: Path) -> Optional[str]:
    """The file meta's Media Storage SOP Class UID (0002,0002): what kind of object the file holds
    (CT image, structured report, DICOMDIR). Group 2 is always explicit VR little endian and comes
    first, so it is read from the first kilobyte even of a file cut short; None when absent."""
    with open(path, "rb") as f:
        head = f.read(1024)
    if head[DICOM_PREAMBLE:DICOM_PREAMBLE + 4] != b"DICM":
        return None
    at = DICOM_PREAMBLE + 4
    while at + 8 <= len(head):
        group, element = int.from_bytes(head[at:at + 2], "little"), int.from_bytes(head[at + 2:at + 4], "little")
        if group != 2:
            return None
        vr = head[at + 4:at + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            length, value_at = int.from_bytes(head[at + 8:at + 12], "little"), at + 12
        else:
            length, value_at = int.from_bytes(head[at + 6:at + 8], "little"), at + 8
        if element == 2:
            return head[value_at:value_at + length].rstrip(b"\0 ").decode("ascii", "replace")
        at = value_at + length
    return None


def holds_dicom_files(folder: Path, look_at: int = 50) -> bool:
    """Whether ``folder`` itself holds DICOM Part 10 files (the "DICM" magic after the preamble),
    from the first ``look_at`` files: cheap, for telling a series folder from a folder of scans."""
    looked = 0
    for path in sorted(Path(folder).iterdir()):
        if looked >= look_at:
            break
        if path.is_file() and not path.name.startswith("."):
            looked += 1
            with open(path, "rb") as f:
                if f.read(DICOM_PREAMBLE + 4)[DICOM_PREAMBLE:] == b"DICM":
                    return True
    return False


def holds_bytes(path: Path, needle: bytes, block: int = 1 << 20) -> bool:
    """Whether ``needle`` occurs in the file, read a block at a time (a damaged file may be large)."""
    tail = b""
    with open(path, "rb") as f:
        while chunk := f.read(block):
            if needle in tail + chunk:
                return True
            tail = chunk[-(len(needle) - 1):] if len(needle) > 1 else b""
    return False


def check_no_damaged_slice(folder: Path, series_uid: str, files: list[str], listed: set[str]) -> None:
    """Refuse the series when a file beside its slices (in ``folder`` or the folders its files
    are in) that no series lists (``listed``) is one of its slices cut short: a DICOM file of the
    series' image class, holding the series' UID, whose header ITK cannot read. Other unlisted
    files (reports, DICOMDIR, notes) are left alone."""
    known = {str(Path(f).resolve()) for f in listed}
    image_class = media_storage_class(Path(files[0])) if files else None
    damaged = []
    beside = sorted({Path(folder)} | {Path(f).parent for f in files})
    for path in sorted(p for place in beside for p in place.iterdir()):
        if not path.is_file() or str(path.resolve()) in known:
            continue
        if image_class is None or media_storage_class(path) != image_class:
            continue
        header = sitk.ImageFileReader()
        header.SetFileName(str(path))
        try:
            header.ReadImageInformation()
            continue  # readable: another series' file or a kind of image the series reader skips
        except RuntimeError:
            pass
        if holds_bytes(path, series_uid.encode("ascii")):
            damaged.append(path.name)
    if damaged:
        raise InputImageError(f"the DICOM series in {folder} has {len(damaged)} damaged or truncated slice "
                              f"file(s) that cannot be read ({', '.join(damaged[:3])}"
                              f"{', ...' if len(damaged) > 3 else ''}): the scan would miss them; copy or "
                              "export the complete series again")


def slice_tags(files: list[str]) -> Optional[list[tuple[list[float], list[float], tuple[int, int]]]]:
    """Each slice file's Image Position (Patient), Image Orientation (Patient) and rows x columns,
    or None when a file is unreadable or a tag is missing or not numbers (the series reader then
    decides, as for any series)."""
    header = sitk.ImageFileReader()
    tags = []
    for name in files:
        header.SetFileName(name)
        try:
            header.ReadImageInformation()
            tags.append(([float(v) for v in header.GetMetaData("0020|0032").split("\\")],
                         [float(v) for v in header.GetMetaData("0020|0037").split("\\")],
                         tuple(header.GetSize()[:2])))
        except (RuntimeError, ValueError):  # GetMetaData raises RuntimeError for a missing tag
            return None
    return tags


def slice_geometry(files: list[str]) -> Optional[SliceGeometry]:
    """Each file's position and the series' orientation, from the files that share the most common
    orientation and size (a localizer filed in the series is not a slice of it), or None (under 3
    slices, or tags missing: the decision is then ITK's)."""
    if len(files) < 3:
        return None
    tags = slice_tags(files)
    if tags is None:
        return None
    slices = []
    for name, (position, orientation, size) in zip(files, tags):
        orientation = tuple(round(v, 3) for v in orientation)
        if len(position) != 3 or len(orientation) != 6:
            return None
        slices.append((name, position, (orientation, size)))
    kinds = [kind for _, _, kind in slices]
    common = max(set(kinds), key=kinds.count)
    kept = [(name, position) for name, position, kind in slices if kind == common]
    if len(kept) < 3:
        return None
    positions = np.array([position for _, position in kept], float)
    if not np.all(np.isfinite(positions)):
        return None
    orientation = common[0]
    row, column = np.array(orientation[:3]), np.array(orientation[3:])
    if not (np.isfinite(row).all() and np.isfinite(column).all()) or np.linalg.norm(np.cross(row, column)) < 1e-3:
        return None
    return SliceGeometry([name for name, _ in kept], positions, row / np.linalg.norm(row),
                         column / np.linalg.norm(column))
