"""Parameter helpers shared by the algorithms: turn Processing values into
plain paths the engine understands."""

from __future__ import annotations

from qgis.core import QgsProcessingException

VECTOR_FORMATS = ["gpkg", "shp", "geojson", "sqlite", "gml", "kml", "tab", "csv", "fgb"]


def raster_path(algorithm, parameters, name, context, required=True) -> str | None:
    layer = algorithm.parameterAsRasterLayer(parameters, name, context)
    if layer is None:
        if required:
            raise QgsProcessingException(f"{name}: no raster layer was given")
        return None
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"{name}: layer {layer.name()!r} comes from the {layer.providerType()!r} provider; "
            "save it as a GeoTIFF (Export > Save As) and use that file"
        )
    return layer.source().split("|", 1)[0]


def vector_path(algorithm, parameters, name, context, feedback) -> tuple[str, str | None]:
    """A file path (and layer name) OGR can open; memory layers and selections
    are written to a temporary GeoPackage first."""
    path, layer_name = algorithm.parameterAsCompatibleSourceLayerPathAndLayerName(
        parameters, name, context, VECTOR_FORMATS, "gpkg", feedback
    )
    return path, (layer_name or None)
