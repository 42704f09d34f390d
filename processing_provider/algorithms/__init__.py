"""The algorithms the provider registers. An algorithm is listed here only
once it works end to end (no stubs)."""

from .classstatistics import PolygonClassStatistics
from .sampleselection import SampleSelection

ALGORITHMS = [PolygonClassStatistics, SampleSelection]
