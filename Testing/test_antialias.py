"""Anti-aliased resampling to the model grid: the rule, what it does to a scan, and that a model
whose metadata asks for it gets it at inference and training alike (and one that does not, not)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from BoneSegmentationLib.core.errors import ModelFileError
from BoneSegmentationLib.inference.budget import estimate
from BoneSegmentationLib.inference.options import InferenceOptions
from BoneSegmentationLib.inference.preprocess import (SLAB_SLICES, antialias, antialias_sigmas, discrete_gaussian,
                                                      grid_geometry, resample_onto, smooth_onto, to_model_grid)
from BoneSegmentationLib.inference.segmenter import Segmenter
from BoneSegmentationLib.model.metadata import make_metadata, validate_metadata
from BoneSegmentationLib.model.modelfile import load_model
from BoneSegmentationLib.training.train import prepare_case
from conftest import make_random_model


def _image(array: np.ndarray, spacing) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin((-20.0, 35.0, 110.0))
    return image


def test_sigmas_bring_every_source_to_the_target_resolution():
    sigmas = antialias_sigmas((0.8, 0.8, 1.0), (4.0, 4.0, 4.0))
    fwhm = np.array(sigmas) * 2 * np.sqrt(2 * np.log(2))
    # the source's own resolution plus the smoothing make the target's, in quadrature
    np.testing.assert_allclose(np.sqrt(fwhm ** 2 + np.array([0.8, 0.8, 1.0]) ** 2), 4.0, rtol=1e-9)
    assert antialias_sigmas((4.0, 4.0, 5.0), (4.0, 4.0, 4.0)) == (0.0, 0.0, 0.0)  # nothing made coarser
    assert antialias_sigmas((3.9, 2.0, 4.0), (4.0, 4.0, 4.0))[0] == 0.0  # barely coarser: linear is enough
    image = _image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), (4.0, 4.0, 4.0))
    assert antialias(image, (4.0, 4.0, 4.0)) is image  # no copy when there is nothing to do


def test_a_thin_cortex_keeps_its_mass_wherever_it_falls_between_model_voxels():
    """A 1 mm plate of 1000 HU in a 0.5 mm scan, shifted by quarter millimetres against a 4 mm grid:
    picked points see all or nothing of it; smoothed first, every shift shows it the same."""
    linear, smoothed = [], []
    for shift in range(16):
        array = np.zeros((160, 8, 8), np.float32)
        start = 60 + shift // 2
        array[start:start + 2] = 1000.0  # 1 mm at 0.5 mm slices
        if shift % 2:
            array[start + 2] = 0.0  # odd shifts: the plate sits half a voxel further (partial volume)
            array[start] = 500.0
            array[start + 2] = 500.0
        image = _image(array, (2.0, 2.0, 0.5))
        for out, smooth in ((linear, False), (smoothed, True)):
            grid = sitk.GetArrayFromImage(to_model_grid(image, (4.0, 4.0, 4.0), smooth=smooth))
            out.append(float(grid[:, 2, 2].sum()))
    # mass per 4 mm: a 1 mm plate of 1000 HU is 250 HU of a 4 mm voxel
    assert np.ptp(linear) > 200  # hit or missed
    assert np.ptp(smoothed) < 0.15 * 250  # a 4 mm Gaussian sampled every 4 mm ripples by about +-5 %
    assert np.mean(smoothed) == pytest.approx(250.0, rel=0.02)


def test_thin_slice_noise_is_brought_to_the_level_of_a_thick_slice_scan():
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 100, (96, 96, 96)).astype(np.float32)
    thin = _image(noise, (0.8, 0.8, 0.8))
    plain = sitk.GetArrayFromImage(to_model_grid(thin, (4.0, 4.0, 4.0)))[2:-2, 2:-2, 2:-2]
    smooth = sitk.GetArrayFromImage(to_model_grid(thin, (4.0, 4.0, 4.0), smooth=True))[2:-2, 2:-2, 2:-2]
    assert plain.std() > 50  # points picked from white noise keep most of it
    assert smooth.std() < 0.1 * plain.std()


def test_geometry_and_pixel_type_are_kept():
    image = _image(np.full((20, 30, 40), 40, np.int16), (0.7, 0.7, 1.25))
    image.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))
    smoothed = antialias(image, (4.0, 4.0, 4.0))
    assert smoothed.GetPixelID() == image.GetPixelID()
    assert (smoothed.GetOrigin(), smoothed.GetSpacing(), smoothed.GetDirection()) == \
        (image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    assert (sitk.GetArrayViewFromImage(smoothed) == 40).all()  # flat stays flat, to the edges


def test_metadata_records_it_as_format_2_and_refuses_nonsense():
    plain = make_metadata(name="t", version="0", description="d", network={}, training={})
    smooth = make_metadata(name="t", version="0", description="d", network={}, training={}, antialias=True)
    assert plain["format_version"] == 1 and plain["preprocessing"] == {"antialias": False}
    assert smooth["format_version"] == 2 and smooth["preprocessing"] == {"antialias": True}
    validate_metadata(smooth)
    for bad in ({"antialias": "yes"}, ["antialias"]):
        with pytest.raises(ModelFileError, match="'preprocessing' must be an object whose 'antialias'"):
            validate_metadata({**smooth, "preprocessing": bad})


def test_the_budget_counts_what_smoothing_allocates():
    """The CT sampled along its first axis (float32) with a temporary, and two slabs: a fraction of
    the CT, less than the int16 CT itself, where smoothing the whole CT held a copy and a buffer
    as large (2x), and measured below the estimate."""
    import tracemalloc
    image = sitk.Image(200, 200, 300, sitk.sitkInt16)
    image.SetSpacing((0.8, 0.8, 1.0))
    args = ((4.0, 4.0, 4.0), 126, (64, 64, 64), 12)
    extra = estimate(image, *args, antialias=True).peak_bytes - estimate(image, *args).peak_bytes
    ct_bytes = 200 * 200 * 300 * 2
    assert 0.3 * ct_bytes < extra < ct_bytes
    size, origin = grid_geometry(image, (4.0,) * 3)
    tracemalloc.start()  # numpy reports its arrays to tracemalloc
    smooth_onto(image, size, origin, (4.0,) * 3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < extra


@pytest.fixture(scope="module")
def thin_slice_ct() -> sitk.Image:
    rng = np.random.default_rng(11)
    array = rng.normal(40, 120, (90, 100, 100)).astype(np.int16)
    array[:, 30:70, 40:60] += 700  # a noisy bone-dense block
    image = _image(array, (0.9, 0.9, 1.0))
    image.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))  # not the model's orientation
    return image


def test_a_model_trained_smoothed_is_run_smoothed(tmp_path, thin_slice_ct):
    """Its network sees what a plain model sees when given the smoothed scan (the pipeline smooths
    while it samples, ``smooth_onto``; the scan here is smoothed whole, ``antialias``: they agree
    to about 1 HU, so a random network's labels agree almost everywhere)."""
    options = InferenceOptions(device="cpu", anatomy=False)
    smoothed_model = load_model(make_random_model(tmp_path / "aa.pt", spacing=4.0, antialias=True))
    plain_model = load_model(make_random_model(tmp_path / "plain.pt", spacing=4.0))
    assert smoothed_model.info.antialias and not plain_model.info.antialias
    with zipfile.ZipFile(tmp_path / "aa.pt") as z:
        name = next(n for n in z.namelist() if n.endswith("metadata.json"))
        assert json.loads(z.read(name))["format_version"] == 2
    got = Segmenter(smoothed_model, options).segment(thin_slice_ct)
    oriented = sitk.DICOMOrient(thin_slice_ct, "LPS")
    expected = Segmenter(plain_model, options).segment(antialias(oriented, (4.0, 4.0, 4.0)))
    unsmoothed = Segmenter(plain_model, options).segment(thin_slice_ct)
    got_labels = sitk.GetArrayFromImage(got.labels_model_grid)
    assert np.mean(got_labels == sitk.GetArrayFromImage(expected.labels_model_grid)) > 0.97
    assert np.mean(got_labels == sitk.GetArrayFromImage(unsmoothed.labels_model_grid)) < 0.8
    # the labels still come back on the input's own grid
    assert got.labels.GetSize() == thin_slice_ct.GetSize()
    assert got.labels.GetDirection() == thin_slice_ct.GetDirection()
    assert got.labels.GetOrigin() == thin_slice_ct.GetOrigin()


def test_training_prepares_cases_as_inference_does(thin_slice_ct):
    labels = sitk.Image(thin_slice_ct.GetSize(), sitk.sitkUInt8)
    labels.CopyInformation(thin_slice_ct)
    smooth = prepare_case("c", thin_slice_ct, labels, 4.0, antialias=True).image
    plain = prepare_case("c", thin_slice_ct, labels, 4.0).image
    grid = sitk.GetArrayFromImage(to_model_grid(thin_slice_ct, (4.0,) * 3, smooth=True))
    np.testing.assert_allclose(smooth, np.clip(grid, -1024, 2048) / 1000.0, atol=1e-6)
    assert smooth.std() < plain.std()


@pytest.mark.parametrize("sigma", [0.37, 0.8, 2.0, 4.5])
def test_the_discrete_gaussian_has_the_variance_asked_for(sigma):
    """However narrow: a 3 mm scan going to 4 mm needs 0.37 voxels, where a sampled Gaussian
    (scipy's gaussian_filter1d) smooths with less than half that variance."""
    kernel = discrete_gaussian(sigma)
    offsets = np.arange(kernel.size) - kernel.size // 2
    assert kernel.sum() == pytest.approx(1.0) and np.allclose(kernel, kernel[::-1])
    assert (kernel * offsets ** 2).sum() == pytest.approx(sigma ** 2, rel=2e-3)


@pytest.mark.parametrize("spacing, shift", [((0.9, 0.9, 1.0), (0.0, 0.0, 0.0)), ((0.9, 0.9, 1.0), (1.3, -0.7, 2.1)),
                                            ((3.0, 3.0, 3.0), (0.0, 0.0, 0.0))])
def test_smoothing_while_sampling_matches_smoothing_the_whole_scan(thin_slice_ct, spacing, shift):
    """``smooth_onto`` (axis by axis, the CT read in slabs) against the full-resolution reference
    (ITK's discrete Gaussian over the whole scan, then linear resampling), on a grid that is
    shifted as shift-and-stitch shifts it, over slabs that do not divide the scan evenly, for a
    thin-slice scan (about 2 voxels of smoothing) and a 3 mm one (0.37 voxels)."""
    scan = sitk.Image(thin_slice_ct)
    scan.SetSpacing(spacing)
    oriented = sitk.DICOMOrient(scan, "LPS")
    assert oriented.GetSize()[2] % SLAB_SLICES
    size, origin = grid_geometry(oriented, (4.0,) * 3)
    origin = tuple(np.array(origin) + np.array(oriented.GetDirection()).reshape(3, 3) @ np.array(shift))
    reference = resample_onto(antialias(oriented, (4.0,) * 3), size, origin, (4.0,) * 3)
    got = smooth_onto(oriented, size, origin, (4.0,) * 3)
    assert (got.GetSize(), got.GetOrigin(), got.GetSpacing(), got.GetDirection()) == \
        (reference.GetSize(), reference.GetOrigin(), reference.GetSpacing(), reference.GetDirection())
    difference = np.abs(sitk.GetArrayFromImage(got) - sitk.GetArrayFromImage(reference))
    # both are the discrete Gaussian, ITK's cut where 1 % of its area is left and ours at 0.01 %,
    # and the reference is cast back to the CT's int16 before it is sampled: about 1 HU
    assert difference.mean() < 2.0 and difference.max() < 15
    # flat stays flat, to the edges of the scan, and the grid's points beyond them are air as ITK makes them
    flat = sitk.Image(oriented.GetSize(), sitk.sitkInt16) + 40
    flat.CopyInformation(oriented)
    np.testing.assert_allclose(sitk.GetArrayFromImage(smooth_onto(flat, size, origin, (4.0,) * 3)),
                               sitk.GetArrayFromImage(resample_onto(flat, size, origin, (4.0,) * 3)), atol=1e-3)


def test_padding_below_air_outside_the_reconstruction_circle_is_read_as_air():
    """GE and Toshiba scanners fill the corners outside the reconstruction circle with -3024 or
    -2048 HU. Where the circle cuts the body (a large patient's arm), smoothing that into the
    tissue would pull the edge far below air, and the network would see the body end a voxel
    early: the grid must be the one a scan padded with air gives, by both forms of the smoothing."""
    rng = np.random.default_rng(5)
    array = rng.normal(40, 20, (40, 120, 120)).astype(np.int16)  # soft tissue filling the field of view
    array[:, 50:70, 95:] += 700  # a bone the circle cuts
    y, x = np.ogrid[:120, :120]
    outside = np.broadcast_to((y - 59.5) ** 2 + (x - 59.5) ** 2 > 58 ** 2, array.shape)
    grids = {}
    for pad in (-1024, -3024):
        padded = array.copy()
        padded[outside] = pad
        oriented = sitk.DICOMOrient(_image(padded, (0.8, 0.8, 1.0)), "LPS")
        size, origin = grid_geometry(oriented, (4.0,) * 3)
        grids[pad] = (sitk.GetArrayFromImage(smooth_onto(oriented, size, origin, (4.0,) * 3)),
                      sitk.GetArrayFromImage(resample_onto(antialias(oriented, (4.0,) * 3), size, origin, (4.0,) * 3)))
        assert sitk.GetArrayViewFromImage(antialias(oriented, (4.0,) * 3)).min() >= -1024
    np.testing.assert_array_equal(grids[-3024][0], grids[-1024][0])
    np.testing.assert_array_equal(grids[-3024][1], grids[-1024][1])
    # the model voxel the circle cuts through the bone reads half bone, half air (read with -3024
    # smoothed in, it was -774 HU: air)
    assert grids[-3024][0][:, 11:14, 23].min() > -300
