"""otbtf engine: sampling, patch extraction, training and serving of TensorFlow
models on geospatial rasters. Plain Python + numpy + rasterio + TensorFlow; no
qgis import, so it runs in QGIS, in scripts, in tests and on cluster workers."""

__version__ = "0.2.0"
