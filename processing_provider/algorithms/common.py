"""Parameter helpers shared by the algorithms: turn Processing values into
plain paths the engine understands."""

from __future__ import annotations

from dataclasses import dataclass

from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsGeometry,
    QgsPointXY,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsWkbTypes,
)

VECTOR_FORMATS = ["gpkg", "shp", "geojson", "sqlite", "gml", "kml", "tab", "csv", "fgb"]


def executor(algorithm, parameters, context, feedback):
    """The executor of the SCHEDULER parameter: None (this machine) when empty, else the Dask
    cluster's (a malformed address is one line, before any work)."""
    text = algorithm.parameterAsString(parameters, "SCHEDULER", context).strip()
    if not text:
        return None
    from ...otbtf_plugin.cluster import executor_for

    return algorithm.run_engine(lambda progress: executor_for(text), feedback)


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


@dataclass
class GroundTruth:
    """The inputs shared by the sampling algorithms, as the engine takes them."""

    raster: str
    vector: str
    layer: str | None
    field: str
    mask: str | None
    nodata: float | None
    crs: object  # QgsCoordinateReferenceSystem of the raster

    def engine_args(self) -> tuple:
        return (self.raster, self.vector, self.field)

    def engine_kwargs(self) -> dict:
        return {"mask": self.mask, "nodata": self.nodata, "layer": self.layer}


def add_ground_truth_parameters(algorithm) -> None:
    """INPUT, VECTOR, FIELD, MASK (API.md) and the advanced NODATA."""
    algorithm.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Input raster"))
    algorithm.addParameter(QgsProcessingParameterFeatureSource(
        "VECTOR", "Ground truth (polygons or points)",
        [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint],
    ))
    algorithm.addParameter(QgsProcessingParameterField(
        "FIELD", "Class field", parentLayerParameterName="VECTOR", type=QgsProcessingParameterField.Any,
    ))
    algorithm.addParameter(QgsProcessingParameterRasterLayer(
        "MASK", "Mask (pixels with value 0 are not used)", optional=True,
    ))
    add_advanced(algorithm, [QgsProcessingParameterNumber(
        "NODATA", "Nodata value (empty: the raster's own)",
        type=QgsProcessingParameterNumber.Double, optional=True,
    )])


def optional_number(algorithm, parameters, name, context) -> float | None:
    if parameters.get(name) in (None, ""):
        return None
    return algorithm.parameterAsDouble(parameters, name, context)


def ground_truth(algorithm, parameters, context, feedback) -> GroundTruth:
    vector, layer = vector_path(algorithm, parameters, "VECTOR", context, feedback)
    return GroundTruth(
        raster=raster_path(algorithm, parameters, "INPUT", context),
        vector=vector,
        layer=layer,
        field=algorithm.parameterAsString(parameters, "FIELD", context),
        mask=raster_path(algorithm, parameters, "MASK", context, required=False),
        nodata=optional_number(algorithm, parameters, "NODATA", context),
        crs=algorithm.parameterAsRasterLayer(parameters, "INPUT", context).crs(),
    )


def add_advanced(algorithm, parameters) -> None:
    """Add parameters flagged as advanced (hidden under 'Advanced Parameters')."""
    for parameter in parameters:
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        algorithm.addParameter(parameter)


def write_points_sink(algorithm, parameters, name, context, fields, crs, rows) -> str:
    """Write ``rows`` of ``(x, y, attributes)`` as points to the sink ``name``; returns its id."""
    sink, dest_id = algorithm.parameterAsSink(parameters, name, context, fields, QgsWkbTypes.Point, crs)
    if sink is None:
        raise QgsProcessingException(algorithm.invalidSinkError(parameters, name))
    for x, y, attributes in rows:
        feature = QgsFeature(fields)
        feature.setAttributes(list(attributes))
        feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(x, y)))
        sink.addFeature(feature, QgsFeatureSink.FastInsert)
    return dest_id


def add_source_parameters(algorithm, count, size_name, size_label, default, minimum, extra_advanced=None) -> None:
    """SOURCE1..SOURCEn (SOURCE1 mandatory), each with its size parameter (``size_name``n,
    integer) and, advanced, ``extra_advanced(n)`` then NODATAn."""
    for n in range(1, count + 1):
        optional = n > 1
        algorithm.addParameter(QgsProcessingParameterRasterLayer(f"SOURCE{n}", f"Source {n}", optional=optional))
        algorithm.addParameter(QgsProcessingParameterNumber(
            f"{size_name}{n}", size_label.format(n=n), type=QgsProcessingParameterNumber.Integer,
            defaultValue=default, minValue=minimum, optional=optional))
        add_advanced(algorithm, [*(extra_advanced(n) if extra_advanced else []), QgsProcessingParameterNumber(
            f"NODATA{n}", f"Nodata value of source {n} (empty: the raster's own)",
            type=QgsProcessingParameterNumber.Double, optional=True)])
