"""BoneSegmentation library: 125 distinct bones from an upper-body CT in one network pass.

Works without 3D Slicer. The Slicer module (``BoneSegmentation.py``) is a thin caller of it.
"""

__version__ = "0.1.0"
