"""The main job end to end at a reduced size (4 mm phantom, small random-weight model)."""

import csv
import json

import numpy as np
import SimpleITK as sitk

from BoneSegmentationLib.core.bones import default_table
from BoneSegmentationLib.cli import main

from conftest import make_random_model


def test_demo_end_to_end_reduced(tmp_path, capsys):
    # random weights at 6 mm: the demo's plumbing, not its accuracy (at 4 mm the anatomical step
    # spent 40 s on the random labels' many small pieces)
    model = make_random_model(tmp_path / "m.pt", patch=32, spacing=6.0)
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--model", str(model), "--spacing", "4", "--device", "cpu", "-q",
                 "--mirror"]) == 0
    stdout = capsys.readouterr().out
    assert "| spine |" in stdout and "bones found" in stdout
    ct = sitk.ReadImage(str(out / "phantom_ct.nii.gz"))
    labels = sitk.ReadImage(str(out / "bones.nii.gz"))
    assert labels.GetSize() == ct.GetSize() and labels.GetOrigin() == ct.GetOrigin()
    assert sitk.ReadImage(str(out / "confidence.nii.gz")).GetSpacing() == (6.0, 6.0, 6.0)
    with open(out / "evaluation.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["group", "median", "p16"] and {r[0] for r in rows[1:6]} == {
        "spine", "ribs", "hands", "large_bones", "all"}
    assert (out / "evaluation.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    review = json.loads((out / "review.json").read_text())
    assert {b["name"] for b in review["bones"]} == {b.name for b in default_table().foreground()}
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "phantom_reference_labels.nii.gz")))
    assert len(np.unique(ref)) == 126
    assert "Foreground Dice" in (out / "evaluation.md").read_text()
    assert "mirror averaging on, stitch 1" in (out / "evaluation.md").read_text()
    from BoneSegmentationLib.synthetic.demo import check_demo_folder
    check_demo_folder(out)  # an earlier demo's folder: a second demo may replace its files


def test_evaluate_cli_on_identical_maps(tmp_path, capsys):
    assert main(["phantom", "-o", str(tmp_path), "--seed", "5", "--spacing", "4"]) == 0
    lab = tmp_path / "phantom_0005_labels.nii.gz"
    assert main(["evaluate", str(lab), str(lab), "--csv", str(tmp_path / "e.csv"), "--plot", str(tmp_path / "e.png")]) == 0
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "| all | 1.000 | 1.000 | 1.000 | 125/125 |" in out
    assert "Foreground Dice (all bone vs background): 1.000" in out


def test_overview_is_readable():
    """Review reasons in full (never cut mid-word), a legend of only the bones found, grouped by
    region, in at least 7 pt; the largest bones named on the slices; one count in the title."""
    import matplotlib.pyplot as plt

    from BoneSegmentationLib.inference.review import ReviewItem
    from BoneSegmentationLib.synthetic.demo import legend_by_region, overview_figure
    from BoneSegmentationLib.synthetic.phantom import make_phantom

    table = default_table()
    ct, labels, _ = make_phantom(4, spacing=6.0, partial=False)
    a = sitk.GetArrayFromImage(labels)
    gone = [b.index for b in table.foreground() if b.region == "hand"][:10]
    a[np.isin(a, gone)] = 0
    cut = sitk.GetImageFromArray(a)
    cut.CopyInformation(labels)
    long_reason = ("in pieces: the largest holds 5 % of its voxels; low confidence (mean 0.38); on the wrong side: "
                   "centre 2 mm right of the midline; nearer the right hand than its own; touches the scan's edge")
    review = [ReviewItem(27, "vertebra_L4", "L4 vertebra", 1.0, True, [long_reason]),
              ReviewItem(3, "mandible", "Mandible", 0.5, True, ["low confidence (mean 0.41)"])]
    fig = overview_figure(ct, cut, review, detected=(113, 125))
    texts = [t for ax in fig.axes for t in ax.texts] + ([fig._suptitle] if fig._suptitle else [])
    joined = " ".join(" ".join(t.get_text().split()) for t in texts)
    assert long_reason in joined and "Mandible: low confidence (mean 0.41)" in joined
    assert fig._suptitle.get_text() == "115 of 125 bones labelled; 113 of 125 overlap the reference"
    assert min(t.get_fontsize() for t in texts) >= 7
    groups = legend_by_region(cut)
    listed = [b.index for _, bones in groups for b in bones]
    assert len(listed) == 115 and not set(gone) & set(listed)
    assert [g for g, _ in groups] == list(dict.fromkeys(b.region for b in table.foreground()))
    legend_text = {t.get_text() for t in fig.axes[3].texts}
    assert "hand (44)" in legend_text and "Left femur" in legend_text
    assert table[gone[0]].display_name not in legend_text
    slice_names = {t.get_text() for ax in fig.axes[:3] for t in ax.texts}
    assert {"Cranium", "Left femur"} & slice_names and len(slice_names) >= 6
    plt.close(fig)
