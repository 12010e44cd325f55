"""Screenshot of the Slicer panel for the README, made by the CI harness (Testing/slicer_harness):
the module's real widgets on the offscreen platform, with the Sample Data phantom loaded.

    python tools/panel_screenshot.py docs/panel.png
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))

import slicer  # noqa: E402
from slicer_harness import load_panel, wait_until  # noqa: E402

if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/panel.png")
    panel = load_panel(slicer.vtkMRMLScene())
    panel.logic.load_sample_phantom()
    wait_until(lambda: panel.ui.segmentButton.enabled, 5)
    frame = panel.parent.widgetRepresentation()
    frame.resize(460, 1000)
    wait_until(lambda: False, 0.5)
    frame.grab().save(str(out))
    print(f"wrote {out}")
