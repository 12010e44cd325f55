"""Slicer's Sample Data module as far as other modules use it: ``registerCustomSampleDataSource``
(same parameters as ``Modules/Scripted/SampleData/SampleData.py``; sources kept in
``slicer.modules.sampleDataSources`` by category, as there)."""

from __future__ import annotations

import types

import slicer


class SampleDataLogic:
    @staticmethod
    def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None, fileNames=None, nodeNames=None,
                                       customDownloader=None, thumbnailFileName=None, loadFileTypes=None,
                                       loadFiles=None, loadFileProperties={}, checksums=None, loadFileType=None):
        if not hasattr(slicer.modules, "sampleDataSources"):
            slicer.modules.sampleDataSources = {}
        source = types.SimpleNamespace(sampleName=sampleName, uris=uris, fileNames=fileNames, nodeNames=nodeNames,
                                       customDownloader=customDownloader, thumbnailFileName=thumbnailFileName)
        slicer.modules.sampleDataSources.setdefault(category, []).append(source)
