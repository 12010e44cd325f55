"""What a model file may contain before any of its code runs.

A TorchScript file is a program: ``__setstate__`` runs while it loads and ``forward`` can call any
operator TorchScript knows, ``torch.from_file`` (which maps and writes files) included. So a file
is checked twice:

1. before ``torch.jit.load``: the zip unpacks to at most ``MAX_UNPACKED_BYTES`` (its members'
   declared sizes, read before any is inflated), is intact (every member's CRC), and no serialized class
   defines ``__setstate__`` (the only code TorchScript runs while loading);
2. after loading, before the first forward pass: every operation of the inlined ``forward`` graph
   is on an allow-list of what a segmentation network needs (convolutions, norms, activations,
   pooling, interpolation, concatenation, arithmetic, shape logic). Nothing that touches files,
   processes, the network or Python is on it.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path

from ..core.errors import ModelFileError
from ..core.files import unpacked_bytes

# aten:: operators a network of this project (or a similar 3D CNN) may use in forward
ALLOWED_ATEN = frozenset("""
conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv3d_transpose conv_transpose3d _convolution
instance_norm batch_norm group_norm layer_norm
relu relu_ leaky_relu leaky_relu_ elu elu_ gelu silu silu_ sigmoid sigmoid_ tanh tanh_ prelu hardtanh hardtanh_
softmax log_softmax softplus dropout dropout_ feature_dropout
max_pool1d max_pool2d max_pool3d max_pool3d_with_indices avg_pool1d avg_pool2d avg_pool3d
adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool3d
upsample_nearest1d upsample_nearest2d upsample_nearest3d upsample_linear1d upsample_bilinear2d
upsample_bicubic2d upsample_trilinear3d _upsample_nearest_exact1d _upsample_nearest_exact2d
_upsample_nearest_exact3d _upsample_bilinear2d_aa _upsample_bicubic2d_aa _upsample_lanczos2d_aa
cat stack add add_ sub sub_ mul mul_ div div_ neg pow sqrt rsqrt exp log abs clamp clamp_ floor ceil round
floordiv remainder mean sum amax amin max min matmul linear
size dim len numel append __getitem__ __contains__ __is__ __isnot__ __not__ __range_length __derive_index
eq ne gt lt ge le __and__ __or__ Float Int Bool ScalarImplicit format list slice select
view reshape flatten permute transpose contiguous unsqueeze squeeze flip pad constant_pad_nd
chunk split narrow expand expand_as clone to detach type_as zeros_like ones_like
""".split())

# prim:: nodes that are control flow and plumbing, not computation with effects
ALLOWED_PRIM = frozenset("""
Constant GetAttr If Loop ListConstruct ListUnpack TupleConstruct TupleUnpack TupleIndex
RaiseException Uninitialized unchecked_cast NumToTensor device dtype min max isinstance
""".split())

MAX_UNPACKED_BYTES = 2 * 2 ** 30  # a 3D segmentation network holds tens of MB; the bundled one 9 MB
_SETSTATE = re.compile(r"^\s*def\s+__setstate__\s*\(", re.MULTILINE)


def check_archive(path: Path) -> None:
    """Step 1: intact zip, no ``__setstate__`` (it would run inside ``torch.jit.load``)."""
    try:
        with zipfile.ZipFile(path) as zf:
            unpacked = unpacked_bytes(zf)
            if unpacked > MAX_UNPACKED_BYTES:
                raise ModelFileError(f"{path} is refused: its members unpack to {unpacked / 2 ** 30:,.1f} GiB, more "
                                     f"than the {MAX_UNPACKED_BYTES / 2 ** 30:g} GiB a model file may hold "
                                     "(a network of this kind holds tens of MB)")
            try:
                broken = zf.testzip()
            except (zlib.error, EOFError, OSError) as e:  # a compressed member that no longer inflates
                raise ModelFileError(f"{path} is corrupt: a member fails to decompress ({e}); download or "
                                     "copy the model again") from None
            if broken is not None:
                raise ModelFileError(f"{path} is corrupt: member {broken} fails its checksum; "
                                     "download or copy the model again")
            for name in zf.namelist():
                if "/code/" in name and name.endswith(".py") and \
                        _SETSTATE.search(zf.read(name).decode("utf-8", "replace")):
                    raise ModelFileError(f"{path} is refused: {name.split('/code/', 1)[1]} defines __setstate__, "
                                         "code that would run while the model loads")
    except zipfile.BadZipFile:
        raise ModelFileError(f"{path} is not a TorchScript model file (corrupt or truncated)") from None


def forbidden_operations(module) -> list[str]:
    """Step 2: the operations of ``module.forward`` (inlined, every nested block) not on the lists."""
    found: set[str] = set()

    def walk(block) -> None:
        for node in block.nodes():
            namespace, _, op = node.kind().partition("::")
            allowed = (namespace == "aten" and op in ALLOWED_ATEN) or (namespace == "prim" and op in ALLOWED_PRIM)
            if not allowed:
                found.add(node.kind())
            for sub in node.blocks():
                walk(sub)

    walk(module.inlined_graph)
    return sorted(found)


def check_graph(module, path: Path | None = None) -> None:
    bad = forbidden_operations(module)
    if bad:
        raise ModelFileError(f"{path or 'model'} is refused: its network uses operations a segmentation network "
                             f"does not need ({', '.join(bad[:5])}{'...' if len(bad) > 5 else ''})")
