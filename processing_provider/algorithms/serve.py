"""otbtf:tensorflowmodelserve"""

from qgis.core import (
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)

from otbtf_plugin import packages
from otbtf_plugin.models.loading import LAYOUTS, model_feature, model_path_problem
from otbtf_plugin.serving import (
    COMPRESSIONS,
    ServeOptions,
    ServeSource,
    parse_output_names,
    parse_user_placeholders,
    serve,
)

from .base import OtbtfAlgorithm
from .common import (
    add_advanced,
    add_device_parameter,
    add_source_parameters,
    allow_lambda_parameter,
    compression_parameter,
    device,
    executor,
    memory_parameter,
    optional_number,
    raster_path,
    scheduler_parameter,
)

MAX_SOURCES = 4


class TensorflowModelServe(OtbtfAlgorithm):
    MODEL = "MODEL"
    OUTPUT = "OUTPUT"

    NAME = "tensorflowmodelserve"
    DISPLAY_NAME = "TensorFlow model serve"
    GROUP = "Serving"
    GROUP_ID = "serving"
    HELP = (
        "Applies a TensorFlow or ONNX model to images of any size, tile by tile, and writes its outputs "
        "as the bands of one GeoTIFF.\n\n"
        "MODEL: a SavedModel folder (ours from otbtf:tensorflowmodeltrain, otbtf's, or Keras "
        "model.export()), a .keras file, or an .onnx file (PyTorch exports, Deepness' model zoo; run "
        "with onnxruntime). Channels-first ONNX models ([n, bands, rows, cols]) are recognised from "
        "their input sizes; LAYOUT (advanced) says it when they cannot tell. An ONNX file with "
        "Deepness metadata is served as Deepness serves it, with nothing to type: its tile size and "
        "overlap, x / 255 then its standardisation, and a 'class' output styled with its class "
        "names (the log lists what was read). SOURCE1 is the reference: the output grid is its grid "
        "(times SPCSCALE), cropped where the receptive field does not fit, unless PAD.\n\n"
        "Leave RFIELDn, PLACEHOLDERn, EFIELD and SPCSCALE at 0 / empty: they come from the model "
        "(its metadata, its fixed input sizes, or by measuring it). Values you give are checked "
        "against the model before any pixel is read, and a mismatch says which values work.\n\n"
        "FULLYCONV: feed whole tiles to a fully-convolutional model instead of one patch per output "
        "pixel. Patch-based serving cuts, for each output pixel, the patch centred on the source "
        "pixel that contains it (8 px before and 7 after for 16 px), exactly as patches extraction "
        "does, so a model is served on the context it was trained on. Sources may have different "
        "resolutions (e.g. 16 px at 30 m with 8 px at 60 m).\n\n"
        "USER_PLACEHOLDERS: other model inputs, as name=value;name=value (numbers, true/false, "
        "lists like [0.2,0.5]). OUTPUT_NAMES: comma-separated outputs to write (empty: what the model "
        "folder serves by default, the class map of a classifier trained here; else every output "
        "without extras such as 'features'). The log says what was served and what else is available.\n\n"
        "TTA: test-time augmentation, the mean of the model over the 8 flips and 90-degree rotations "
        "of its input (each patch about itself; a whole tile for fully-convolutional models), outputs "
        "turned back; a class output is the class of the mean scores. Eight times the work; the "
        "result still does not depend on the tiles.\n\n"
        "Tiles whose sources hold only nodata are not computed; output pixels whose centre input "
        "pixel is nodata get BACKGROUND_VALUE. Results do not depend on tile or batch size: the same "
        "pixels and geometry, values equal up to the float rounding of the model's kernels (the last "
        "digit of float32 may change with the batch size on some processors), classes equal except "
        "where two scores tie within that rounding.\n\n"
        "SCHEDULER (advanced): the address of a Dask scheduler; its workers compute the tiles (they "
        "read the sources and the model at the same paths) and the result is identical to a run on "
        "this machine.\n\n"
        "Example: SOURCE1 = the Landsat 8 sample, MODEL = the folder written by "
        "otbtf:tensorflowmodeltrain, OUTPUT_NAMES = class: a class map styled with the class names."
    )

    def initAlgorithm(self, config=None):
        add_source_parameters(
            self,
            MAX_SOURCES,
            "RFIELD",
            "Receptive field of source {n} (pixels; 0: from the model)",
            0,
            0,
            lambda n: [
                QgsProcessingParameterString(
                    f"PLACEHOLDER{n}", f"Model input fed by source {n} (empty: from the model)", optional=True
                )
            ],
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL,
                "Model (SavedModel folder; type a path to use an .onnx or a .keras file)",
                behavior=QgsProcessingParameterFile.Folder,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                "USER_PLACEHOLDERS", "User placeholders (name=value;name=value)", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                "OUTPUT_NAMES", "Output tensors (comma-separated; empty: the model's default, else all)", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean("FULLYCONV", "Fully-convolutional (whole tiles at once)", defaultValue=False)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "EFIELD",
                "Expression field (pixels; 0: from the model)",
                type=QgsProcessingParameterNumber.Integer,
                defaultValue=0,
                minValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "SPCSCALE",
                "Spacing scale (0: from the model)",
                type=QgsProcessingParameterNumber.Integer,
                defaultValue=0,
                minValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "BACKGROUND_VALUE",
                "Background value (nodata input, padding)",
                type=QgsProcessingParameterNumber.Double,
                defaultValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                "PAD", "Pad: cover the whole extent of source 1 (inputs padded with nodata or 0)", defaultValue=False
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                "TTA",
                "Test-time augmentation: mean over the 8 flips and 90-degree rotations (8 times the work)",
                defaultValue=False,
                optional=True,
            )
        )  # optional: graphical models saved before TTA existed still run
        self.addParameter(
            QgsProcessingParameterNumber(
                "OVERLAP",
                "Overlap of neighbouring tiles, blended (output pixels; removes the seams of zero-padded "
                "fully-convolutional models)",
                type=QgsProcessingParameterNumber.Integer,
                defaultValue=0,
                minValue=0,
                optional=True,
            )
        )
        add_device_parameter(self)
        add_advanced(
            self,
            [
                QgsProcessingParameterNumber(
                    "TILE_SIZE",
                    "Tile size (output pixels; 0: from the memory budget, which it never passes)",
                    type=QgsProcessingParameterNumber.Integer,
                    defaultValue=0,
                    minValue=0,
                ),
                QgsProcessingParameterNumber(
                    "BATCH_SIZE",
                    "Patches per model call (0: from the memory budget, which it never passes)",
                    type=QgsProcessingParameterNumber.Integer,
                    defaultValue=0,
                    minValue=0,
                ),
                memory_parameter(),
                allow_lambda_parameter(),
                compression_parameter(),
                scheduler_parameter(),
                QgsProcessingParameterEnum(
                    "LAYOUT",
                    "Model layout (auto: read from an ONNX model's input sizes; "
                    "NCHW: channels first, NHWC: channels last)",
                    options=list(LAYOUTS),
                    defaultValue=0,
                    optional=True,
                ),
            ],
        )
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Output"))

    def checkParameterValues(self, parameters, context):
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        model = self.parameterAsFile(parameters, self.MODEL, context)
        missing = packages.requirement_message(model_feature(model))
        problems = [missing] if missing else []
        problem = model_path_problem(model) if model else "give a MODEL"
        if problem:
            problems.append(problem)
        return (False, "; ".join(problems)) if problems else (True, "")

    def processAlgorithm(self, parameters, context, feedback):
        sources = []
        for n in range(1, MAX_SOURCES + 1):
            path = raster_path(self, parameters, f"SOURCE{n}", context, required=n == 1)
            if path is None:
                continue
            sources.append(
                ServeSource(
                    path,
                    rfield=self.parameterAsInt(parameters, f"RFIELD{n}", context),
                    placeholder=self.parameterAsString(parameters, f"PLACEHOLDER{n}", context).strip(),
                    nodata=optional_number(self, parameters, f"NODATA{n}", context),
                )
            )
        options = ServeOptions(
            output_names=parse_output_names(self.parameterAsString(parameters, "OUTPUT_NAMES", context)),
            user_placeholders=self.run_engine(
                lambda progress: parse_user_placeholders(
                    self.parameterAsString(parameters, "USER_PLACEHOLDERS", context)
                ),
                feedback,
            ),
            fully_conv=self.parameterAsBool(parameters, "FULLYCONV", context),
            efield=self.parameterAsInt(parameters, "EFIELD", context),
            scale=self.parameterAsInt(parameters, "SPCSCALE", context),
            background=self.parameterAsDouble(parameters, "BACKGROUND_VALUE", context),
            pad=self.parameterAsBool(parameters, "PAD", context),
            tile_px=self.parameterAsInt(parameters, "TILE_SIZE", context),
            batch_size=self.parameterAsInt(parameters, "BATCH_SIZE", context),
            memory_mb=self.parameterAsInt(parameters, "MEMORY_MB", context),
            allow_lambda=self.parameterAsBool(parameters, "ALLOW_LAMBDA", context),
            compress=COMPRESSIONS[self.parameterAsEnum(parameters, "COMPRESSION", context)],
            tta=self.parameterAsBool(parameters, "TTA", context),
            overlap=self.parameterAsInt(parameters, "OVERLAP", context),
            layout=LAYOUTS[self.parameterAsEnum(parameters, "LAYOUT", context)],
            device=device(self, parameters, context),
        )
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        result = self.run_engine(
            serve,
            feedback,
            sources,
            self.parameterAsFile(parameters, self.MODEL, context),
            output,
            options,
            executor=executor(self, parameters, context, feedback),
        )
        plan = result.plan
        found = {self.OUTPUT: str(result.output), "TILES": result.tiles, "SKIPPED_TILES": result.skipped_tiles}
        if plan is None:  # a super-resolution model: its own finer grid
            return {**found, "MODE": "superresolution", "UPSCALE": result.upscale}
        return {
            **found,
            "MODE": plan.mode,
            "RFIELD": plan.geometry.rfield,
            "EFIELD": plan.geometry.efield,
            "SPCSCALE": plan.geometry.scale,
        }
