"""Thin QGIS Processing layer over the otbtf engine (``otbtf_plugin``)."""
