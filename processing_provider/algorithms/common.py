"""Parameter helpers shared by the algorithms: turn Processing values into
plain paths the engine understands."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import numpy as np
from qgis.core import (
    Qgis,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsWkbTypes,
)

from otbtf_plugin.errors import EngineError
from otbtf_plugin.models.devices import DEVICES, Device
from otbtf_plugin.serving.options import COMPRESSIONS
from otbtf_plugin.vector import VECTOR_DRIVERS, write_points

from ..paths import layer_file

VECTOR_FORMATS = ["gpkg", "shp", "geojson", "sqlite", "gml", "kml", "tab", "csv", "fgb"]


def executor(algorithm, parameters, context, feedback):
    """The executor of the SCHEDULER parameter: None (this machine) when empty, else the Dask
    cluster's (a malformed address is one line, before any work)."""
    text = algorithm.parameterAsString(parameters, "SCHEDULER", context).strip()
    if not text:
        return None
    from otbtf_plugin.execution.cluster import executor_for

    return algorithm.run_engine(lambda progress: executor_for(text), feedback)


@overload
def raster_path(algorithm, parameters, name, context, required: Literal[True] = True) -> str: ...
@overload
def raster_path(algorithm, parameters, name, context, required: bool) -> str | None: ...
def raster_path(algorithm, parameters, name, context, required: bool = True) -> str | None:
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
    """INPUT, VECTOR, FIELD, MASK (docs/interface.md) and the advanced NODATA."""
    algorithm.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Input raster"))
    algorithm.addParameter(
        QgsProcessingParameterFeatureSource(
            "VECTOR",
            "Ground truth (polygons or points)",
            [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint],
        )
    )
    algorithm.addParameter(
        QgsProcessingParameterField(
            "FIELD",
            "Class field",
            parentLayerParameterName="VECTOR",
            type=QgsProcessingParameterField.Any,
        )
    )
    algorithm.addParameter(
        QgsProcessingParameterRasterLayer(
            "MASK",
            "Mask (pixels with value 0 are not used)",
            optional=True,
        )
    )
    add_advanced(
        algorithm,
        [
            QgsProcessingParameterNumber(
                "NODATA",
                "Nodata value (empty: the raster's own)",
                type=QgsProcessingParameterNumber.Double,
                optional=True,
            )
        ],
    )


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


def add_device_parameter(algorithm) -> None:
    """DEVICE: where the model runs (optional: graphical models saved before it existed still run)."""
    algorithm.addParameter(
        QgsProcessingParameterEnum(
            "DEVICE",
            "Device (auto: a GPU when the installed runtime sees one, else the CPU; the log names it)",
            options=list(DEVICES),
            defaultValue=0,
            optional=True,
        )
    )


def device(algorithm, parameters, context) -> Device:
    return DEVICES[algorithm.parameterAsEnum(parameters, "DEVICE", context)]


def memory_parameter() -> QgsProcessingParameterNumber:
    return QgsProcessingParameterNumber(
        "MEMORY_MB", "Memory budget (MiB)", type=QgsProcessingParameterNumber.Integer, defaultValue=512, minValue=32
    )


def allow_lambda_parameter() -> QgsProcessingParameterBoolean:
    return QgsProcessingParameterBoolean(
        "ALLOW_LAMBDA",
        "Allow Lambda layers (runs code from the model file: only for files you trust)",
        defaultValue=False,
    )


def compression_parameter() -> QgsProcessingParameterEnum:
    return QgsProcessingParameterEnum(
        "COMPRESSION",
        "Output compression (deflate: for software without ZSTD)",
        options=list(COMPRESSIONS),
        defaultValue=0,
    )


def scheduler_parameter() -> QgsProcessingParameterString:
    return QgsProcessingParameterString(
        "SCHEDULER", "Dask scheduler (e.g. tcp://host:8786; empty: this machine)", optional=True
    )


def folds_parameter() -> QgsProcessingParameterNumber:
    return QgsProcessingParameterNumber(
        "FOLDS",
        "Cross-validation grouped by polygon: folds (0: none)",
        type=QgsProcessingParameterNumber.Integer,
        defaultValue=0,
        minValue=0,
        maxValue=20,
        optional=True,
    )


def add_advanced(algorithm, parameters) -> None:
    """Add parameters flagged as advanced (hidden under 'Advanced Parameters')."""
    for parameter in parameters:
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        algorithm.addParameter(parameter)


def field_names(algorithm, parameters, name: str, context) -> list[str]:
    """A field parameter's field names: ``parameterAsStrings`` where QGIS has it (3.32 and later,
    which deprecate ``parameterAsFields``), ``parameterAsFields`` before."""
    if Qgis.QGIS_VERSION_INT >= 33200:
        return list(algorithm.parameterAsStrings(parameters, name, context))
    return list(algorithm.parameterAsFields(parameters, name, context))


def field_type(kind: str):
    """A field's type for ``QgsField``: ``QMetaType.Type`` where QGIS takes it (3.38 and later,
    and Qt 6, where ``QVariant``'s types are gone), ``QVariant.Type`` before."""
    if Qgis.QGIS_VERSION_INT >= 33800:
        from qgis.PyQt.QtCore import QMetaType

        return {"String": QMetaType.Type.QString, "Real": QMetaType.Type.Double}.get(kind, QMetaType.Type.LongLong)
    from qgis.PyQt.QtCore import QVariant

    return {"String": QVariant.String, "Real": QVariant.Double}.get(kind, QVariant.LongLong)


def write_points_output(
    algorithm, parameters, name, context, crs, x, y, columns: dict, metadata: dict[str, str] | None = None
) -> str:
    """Write points and their attributes (``columns``: name -> (values, "String", "Real" or
    "Integer64")) to the output ``name``; returns its id. A file is written by the engine
    under a temporary name and renamed when complete and checked (a full disk leaves the
    previous file, or nothing); a memory layer or a database table goes through QGIS' sink,
    every feature checked."""
    destination = algorithm.parameterAsOutputLayer(parameters, name, context)
    path = Path(destination)
    if layer_file(destination) == destination and path.suffix.lower() in VECTOR_DRIVERS:
        try:
            write_points(path, path.stem, crs.toWkt() or None, x, y, columns, metadata)
        except EngineError as err:
            raise QgsProcessingException(str(err)) from err
        return destination
    fields = QgsFields()
    for column, (_, kind) in columns.items():
        fields.append(QgsField(column, field_type(kind)))
    sink, dest_id = algorithm.parameterAsSink(parameters, name, context, fields, QgsWkbTypes.Point, crs)
    if sink is None:
        raise QgsProcessingException(algorithm.invalidSinkError(parameters, name))
    values = [list(v) for v, _ in columns.values()]
    for k, (px, py) in enumerate(zip(np.asarray(x).tolist(), np.asarray(y).tolist(), strict=True)):
        feature = QgsFeature(fields)
        feature.setAttributes([column[k] for column in values])
        feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(px, py)))
        if not sink.addFeature(feature, QgsFeatureSink.FastInsert):
            raise QgsProcessingException(
                f"could not write the points of {name} to {dest_id}: "
                f"{sink.lastError() or 'the layer refused a feature'}"
            )
    return dest_id


def add_source_parameters(algorithm, count, size_name, size_label, default, minimum, extra_advanced=None) -> None:
    """SOURCE1..SOURCEn (SOURCE1 mandatory), each with its size parameter (``size_name``n,
    integer) and, advanced, ``extra_advanced(n)`` then NODATAn."""
    for n in range(1, count + 1):
        optional = n > 1
        algorithm.addParameter(QgsProcessingParameterRasterLayer(f"SOURCE{n}", f"Source {n}", optional=optional))
        algorithm.addParameter(
            QgsProcessingParameterNumber(
                f"{size_name}{n}",
                size_label.format(n=n),
                type=QgsProcessingParameterNumber.Integer,
                defaultValue=default,
                minValue=minimum,
                optional=optional,
            )
        )
        add_advanced(
            algorithm,
            [
                *(extra_advanced(n) if extra_advanced else []),
                QgsProcessingParameterNumber(
                    f"NODATA{n}",
                    f"Nodata value of source {n} (empty: the raster's own)",
                    type=QgsProcessingParameterNumber.Double,
                    optional=True,
                ),
            ],
        )
