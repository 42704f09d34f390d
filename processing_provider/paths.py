"""The paths a run reads and writes, read from its parameter definitions, so that the
engine's rules on outputs (:mod:`otbtf_plugin.outputs`) hold for every algorithm
without each one listing its parameters again."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

from qgis.core import (
    QgsProcessingDestinationParameter,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
    QgsProcessingParameterVectorLayer,
)

from otbtf_plugin.outputs import Output, geotiff

_OGR_URI = re.compile(r"""^ogr:dbname=(['"]?)(?P<path>.+?)\1(\s+table=.*)?$""")


def layer_file(source: str) -> str | None:
    """The file behind a layer source or sink URI (``path|layername=x``, ``ogr:dbname=...``), or
    None for a memory layer or a database."""
    if not source or source == "TEMPORARY_OUTPUT" or source.startswith(("memory:", "postgres:", "spatialite:")):
        return None
    match = _OGR_URI.match(source)
    return (match["path"] if match else source.split("|", 1)[0]) or None


def run_inputs(algorithm, parameters, context) -> dict[str, list[str]]:
    """The files each input parameter names."""
    found: dict[str, list[str]] = {}
    for definition in algorithm.parameterDefinitions():
        name = definition.name()
        if parameters.get(name) in (None, ""):
            continue
        if isinstance(definition, QgsProcessingParameterRasterLayer):
            layers = [algorithm.parameterAsRasterLayer(parameters, name, context)]
        elif isinstance(definition, (QgsProcessingParameterFeatureSource, QgsProcessingParameterVectorLayer)):
            layers = [algorithm.parameterAsVectorLayer(parameters, name, context)]
        elif isinstance(definition, QgsProcessingParameterMultipleLayers):
            layers = algorithm.parameterAsLayerList(parameters, name, context)
        elif isinstance(definition, QgsProcessingParameterFile):
            found[name] = [algorithm.parameterAsFile(parameters, name, context)]
            continue
        else:
            continue
        found[name] = [path for path in (layer_file(layer.source()) for layer in layers if layer) if path]
    return found


def run_outputs(
    algorithm, parameters, context, folder_outputs: Mapping[str, Callable[[str], Output]]
) -> dict[str, Output]:
    """The files and folders each output parameter will write. ``folder_outputs`` maps a
    folder output to the engine's rule for it (a model folder replaced whole, a checkpoint
    folder); other folder outputs are written into (nothing in them is removed)."""
    found: dict[str, Output] = {}
    for definition in algorithm.destinationParameterDefinitions():
        name = definition.name()
        value = parameters.get(name, definition.defaultValue())
        if value in (None, "") or (
            isinstance(definition, QgsProcessingDestinationParameter)
            and not definition.createByDefault()
            and name not in parameters
        ):
            continue
        if isinstance(definition, QgsProcessingParameterFolderDestination):
            path = algorithm.parameterAsFileOutput(parameters, name, context)
            if path:
                rule = folder_outputs.get(name)
                found[name] = rule(path) if rule else Output(path, "into")
        elif isinstance(definition, QgsProcessingParameterFileDestination):
            path = algorithm.parameterAsFileOutput(parameters, name, context)
            if path:
                html = path.lower().endswith((".html", ".htm"))
                found[name] = Output(path, companions=(".json",) if html else ())
        elif isinstance(
            definition,
            (
                QgsProcessingParameterRasterDestination,
                QgsProcessingParameterVectorDestination,
                QgsProcessingParameterFeatureSink,
            ),
        ):
            path = layer_file(algorithm.parameterAsOutputLayer(parameters, name, context))
            if path:  # every raster this provider writes is a GeoTIFF
                raster = isinstance(definition, QgsProcessingParameterRasterDestination)
                found[name] = geotiff(path) if raster else Output(path)
    return found


def non_finite_message(algorithm, parameters, context) -> str | None:
    """QGIS accepts nan and inf for a number with limits (every comparison with nan is false),
    and rounds 2.5 to 3 for a whole-number parameter without a word."""
    for definition in algorithm.parameterDefinitions():
        name = definition.name()
        if not isinstance(definition, QgsProcessingParameterNumber) or parameters.get(name) in (None, ""):
            continue
        number = algorithm.parameterAsDouble(parameters, name, context)
        default = definition.defaultValue()
        also = f" (the default is {default:g})" if isinstance(default, int | float) else ""
        if not math.isfinite(number):
            return f"{name} = {parameters[name]} is not accepted: give a finite number{also}"
        if definition.dataType() == QgsProcessingParameterNumber.Integer and number != int(number):
            return f"{name} = {parameters[name]} is not accepted: give a whole number{also}"  # QGIS would round it
    return None


def invalid_value_message(algorithm, parameters, context) -> str | None:
    """QGIS says "Incorrect parameter value for EPOCHS"; this says what would work."""
    for definition in algorithm.parameterDefinitions():
        name = definition.name()
        value = parameters.get(name)
        if value is None or definition.checkValueIsAcceptable(value, context):
            continue
        if isinstance(definition, QgsProcessingParameterNumber):
            kind = "a whole number" if definition.dataType() == QgsProcessingParameterNumber.Integer else "a number"
            low, high = definition.minimum(), definition.maximum()
            limits = []
            if low > -1e300:
                limits.append(f"at least {low:g}")
            if high < 1e300:
                limits.append(f"at most {high:g}")
            return f"{name} = {value} is not accepted: give {kind}" + (f", {' and '.join(limits)}" if limits else "")
        if isinstance(definition, QgsProcessingParameterEnum):
            options = ", ".join(f"{i} ({option})" for i, option in enumerate(definition.options()))
            return f"{name} = {value} is not accepted: give one of {options}"
    return None
