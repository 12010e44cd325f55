"""Average the weights of models fine-tuned from one parent (a "model soup") into one model file.

    python tools/average_models.py runs/realct14/bones-phantom-demo.pt runs/realct15/bones-phantom-demo.pt \
        --version 1.4 --out runs/soup14-15.pt

Runs of one recipe that differ only in their seed land in one basin; the mean of their weights is
often better than either and costs nothing at inference (an ensemble would run every network).
Read a soup against its ingredients on the training's validation images
(``tools/train_real_ct_model.py --validate-model``), never on the real test scans. The output's
metadata names every ingredient by name, version and SHA-256. An existing file is not overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from BoneSegmentationLib.core.errors import BoneSegmentationError
from BoneSegmentationLib.model.modelfile import save_model
from BoneSegmentationLib.training.soup import average_models


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", type=Path, help="model files (.pt) fine-tuned from one parent")
    ap.add_argument("--version", required=True, help="the soup's version, written in its metadata")
    ap.add_argument("--out", required=True, type=Path, help="the soup's model file (must not exist)")
    args = ap.parse_args(argv)
    if args.out.exists():
        ap.error(f"{args.out} exists; choose another --out (a model file is never overwritten)")
    try:
        soup = average_models(args.models, args.version)
    except BoneSegmentationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if len(soup.parents) > 1:
        print("note: the models have different parents (" + "; ".join(sorted(p or "none" for p in soup.parents))
              + "): a soup works when they share one", file=sys.stderr)
    save_model(soup.module, soup.metadata, args.out)
    print(f"wrote {args.out}: the mean of " + "; ".join(soup.ingredients))
    return 0


if __name__ == "__main__":
    sys.exit(main())
