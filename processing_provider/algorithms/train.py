"""otbtf:tensorflowmodeltrain"""

from collections.abc import Callable
from typing import ClassVar

from qgis.core import (
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from otbtf_plugin import packages
from otbtf_plugin.models.metadata import model_folder_output
from otbtf_plugin.outputs import Output
from otbtf_plugin.training import ARCHITECTURES, TASKS, TrainConfig, train
from otbtf_plugin.training.schedule import checkpoint_output

from .base import OtbtfAlgorithm
from .common import add_advanced, add_device_parameter, device, folds_parameter, raster_path

MAX_SOURCES = 4


class TensorflowModelTrain(OtbtfAlgorithm):
    NAME = "tensorflowmodeltrain"
    DISPLAY_NAME = "TensorFlow model train"
    GROUP = "Training"
    GROUP_ID = "training"
    FOLDER_OUTPUTS: ClassVar[dict[str, Callable[[str], Output]]] = {
        "OUTPUT_MODEL": model_folder_output,
        "CHECKPOINT_DIR": checkpoint_output,
    }
    HELP = (
        "Trains a TensorFlow model on patches images (from otbtf:patchesextraction, or otbtf's "
        "PatchesExtraction), one per source, with a labels image: one class per patch "
        "(classification) or label patches (semantic segmentation).\n\n"
        "ARCHITECTURE cnn: a small patch classifier (receptive field = the patch size, expression "
        "field 1): one convolutional branch per source, global pooling, softmax. ARCHITECTURE unet: "
        "a U-Net style segmenter for one source (patch size a multiple of 4): receptive field = the "
        "patch size, expression field = half of it (the centre, away from the patch edges, so tile "
        "seams cannot show when served). ARCHITECTURE regressor: the cnn with one linear output "
        "'value' for continuous labels (with label patches: the unet body, a value per pixel). The band "
        "normalisation is computed from the training patches and built into the model. MODEL: "
        "fine-tune an existing model instead (a model folder of ours or a .keras file; the original "
        "is not changed).\n\n"
        "Validation: VALID_PATCHESn and VALID_LABELS, or else whole polygons held out of the training "
        "patches with SEED (VALID_FRACTION of each class's patches): patches of one polygon look alike, "
        "so none is split between training and validation. The polygons come from the table "
        "otbtf:patchesextraction writes beside the labels image (labels.origins.csv, from the "
        "originfid of otbtf:sampleselection's points); without originfid, spatial blocks are held "
        "out; without the table (otbtf's patches), runs of consecutive patches. A class of one "
        "polygon is cut into blocks, and the report warns that its scores flatter it. The report "
        "says how the split was made and how many polygons each side holds. Data are read from disk "
        "batch by batch: a training set larger than memory works.\n\n"
        "PATIENCE (epochs, 10; 0 = off): stop when the validation loss has not improved for that many "
        "epochs and keep the best epoch's weights (EPOCHS is then a maximum); the learning rate is "
        "halved after half as many epochs without improvement. CHECKPOINT_DIR: the run's state is "
        "saved there after every epoch; run again with the same folder, data and settings to resume a "
        "killed or cancelled run (the result equals an uninterrupted run's; EPOCHS may be raised). "
        "FOLDS (advanced, 0 = none): k-fold cross-validation grouped by polygon, one more network per "
        "fold (k times the training time), each fold's scores with their mean and spread in the report "
        "and the results (CV_OVERALL_ACCURACY, CV_KAPPA, CV_MEAN_F1: means).\n\n"
        "OUTPUT_MODEL: a folder with the SavedModel, model.keras and otbtf_model.json, which "
        "otbtf:tensorflowmodelserve reads (no geometry to type). Serve its 'class' output for a class "
        "map, 'prob' for probabilities. OUTPUT_REPORT: per-class precision, recall, F1, overall "
        "accuracy, kappa, confusion matrix and learning curves (HTML, and JSON beside it). "
        "OUTPUT_ONNX (optional): the same model as one ONNX file (channels first, with this folder's "
        "metadata inside), which otbtf:tensorflowmodelserve serves like the folder and onnxruntime runs "
        "anywhere; a unet's file also carries Deepness' metadata, so that Deepness serves it. "
        "TENSORBOARD_DIR: logs for TensorBoard. SEED gives the same weights on the same machine. "
        "A cnn also serves, when named in OUTPUT_NAMES, 'features': its 64 values per source before "
        "the head, for otbtf:trainclassifierfromdeepfeatures.\n\n"
        "Example: TRAIN_PATCHES1 and TRAIN_LABELS from otbtf:patchesextraction on the Landsat 8 "
        "sample (16 px patches, FIELD = name), ARCHITECTURE = cnn, the defaults: a four-class "
        "land-cover classifier in about 15 s on 2 cores.\n\n"
        "Defaults (at most 100 EPOCHS, PATIENCE 10, AUGMENT on, CLASS_WEIGHTS off) were chosen by "
        "cross-validation grouped by polygon on a real Landsat 7 scene (README). For a map from "
        "few polygons, a random forest on this model's 'features' "
        "(otbtf:trainclassifierfromdeepfeatures) scored best there."
    )

    def initAlgorithm(self, config=None):
        for n in range(1, MAX_SOURCES + 1):
            self.addParameter(
                QgsProcessingParameterRasterLayer(
                    f"TRAIN_PATCHES{n}", f"Training patches image, source {n}", optional=n > 1
                )
            )
        self.addParameter(QgsProcessingParameterRasterLayer("TRAIN_LABELS", "Training labels image"))
        for n in range(1, MAX_SOURCES + 1):
            self.addParameter(
                QgsProcessingParameterRasterLayer(
                    f"VALID_PATCHES{n}", f"Validation patches image, source {n}", optional=True
                )
            )
        self.addParameter(QgsProcessingParameterRasterLayer("VALID_LABELS", "Validation labels image", optional=True))
        self.addParameter(
            QgsProcessingParameterFile(
                "MODEL",
                "Model to fine-tune (a model folder of ours; empty: a new model)",
                behavior=QgsProcessingParameterFile.Folder,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                "ARCHITECTURE", "Architecture (new model)", options=list(ARCHITECTURES), defaultValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                "TASK",
                "Task (auto: whole-number labels are classes, others values to regress)",
                options=list(TASKS),
                defaultValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "EPOCHS",
                "Epochs (at most, with PATIENCE)",
                type=QgsProcessingParameterNumber.Integer,
                defaultValue=100,
                minValue=1,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "BATCH_SIZE", "Batch size", type=QgsProcessingParameterNumber.Integer, defaultValue=32, minValue=1
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "SEED", "Random seed", type=QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "PATIENCE",
                "Patience: stop after this many epochs without improvement (0: train all epochs)",
                type=QgsProcessingParameterNumber.Integer,
                defaultValue=10,
                minValue=0,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFolderDestination(
                "TENSORBOARD_DIR", "TensorBoard logs", optional=True, createByDefault=False
            )
        )
        self.addParameter(
            QgsProcessingParameterFolderDestination(
                "CHECKPOINT_DIR", "Checkpoints (the same folder resumes a run)", optional=True, createByDefault=False
            )
        )
        add_device_parameter(self)
        add_advanced(
            self,
            [
                QgsProcessingParameterNumber(
                    "LEARNING_RATE",
                    "Learning rate",
                    type=QgsProcessingParameterNumber.Double,
                    defaultValue=0.001,
                    minValue=0.0,
                ),
                QgsProcessingParameterBoolean("CLASS_WEIGHTS", "Weight classes by their rarity", defaultValue=False),
                QgsProcessingParameterBoolean(
                    "AUGMENT", "Augment: random flips and 90-degree rotations", defaultValue=True
                ),
                QgsProcessingParameterNumber(
                    "FREEZE_LAYERS",
                    "Fine-tuning: keep the weights of the first N layers",
                    type=QgsProcessingParameterNumber.Integer,
                    defaultValue=0,
                    minValue=0,
                ),
                folds_parameter(),
                QgsProcessingParameterNumber(
                    "VALID_FRACTION",
                    "Share of each class's polygons held out for validation (no validation set)",
                    type=QgsProcessingParameterNumber.Double,
                    defaultValue=0.2,
                    minValue=0.01,
                    maxValue=0.9,
                ),
            ],
        )
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT_MODEL", "Trained model"))
        self.addParameter(
            QgsProcessingParameterFileDestination(
                "OUTPUT_REPORT", "Validation report", "HTML files (*.html)", optional=True, createByDefault=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                "OUTPUT_ONNX",
                "The model also as an ONNX file (onnxruntime, Deepness)",
                "ONNX files (*.onnx)",
                optional=True,
                createByDefault=False,
            )
        )

    def checkParameterValues(self, parameters, context):
        ok, message = super().checkParameterValues(parameters, context)
        onnx = bool(self.parameterAsFileOutput(parameters, "OUTPUT_ONNX", context))
        missing = (
            packages.requirement_message("tensorflow", "export") if onnx else packages.requirement_message("tensorflow")
        )
        if ok and missing:
            return False, missing
        return ok, message

    def processAlgorithm(self, parameters, context, feedback):
        def sources(prefix):
            found = []
            for n in range(1, MAX_SOURCES + 1):
                path = raster_path(self, parameters, f"{prefix}{n}", context, required=False)
                if path:
                    found.append(path)
            return found

        tensorboard = (
            self.parameterAsString(parameters, "TENSORBOARD_DIR", context)
            if parameters.get("TENSORBOARD_DIR")
            else None
        )
        checkpoints = (
            self.parameterAsString(parameters, "CHECKPOINT_DIR", context) if parameters.get("CHECKPOINT_DIR") else None
        )
        config = TrainConfig(
            train_patches=sources("TRAIN_PATCHES"),
            train_labels=raster_path(self, parameters, "TRAIN_LABELS", context),
            valid_patches=sources("VALID_PATCHES") or None,
            valid_labels=raster_path(self, parameters, "VALID_LABELS", context, required=False),
            output_model=self.parameterAsString(parameters, "OUTPUT_MODEL", context),
            output_report=self.parameterAsFileOutput(parameters, "OUTPUT_REPORT", context) or None,
            output_onnx=self.parameterAsFileOutput(parameters, "OUTPUT_ONNX", context) or None,
            architecture=ARCHITECTURES[self.parameterAsEnum(parameters, "ARCHITECTURE", context)],
            task=TASKS[self.parameterAsEnum(parameters, "TASK", context)],
            epochs=self.parameterAsInt(parameters, "EPOCHS", context),
            batch_size=self.parameterAsInt(parameters, "BATCH_SIZE", context),
            seed=self.parameterAsInt(parameters, "SEED", context),
            learning_rate=self.parameterAsDouble(parameters, "LEARNING_RATE", context),
            class_weights=self.parameterAsBool(parameters, "CLASS_WEIGHTS", context),
            valid_fraction=self.parameterAsDouble(parameters, "VALID_FRACTION", context),
            tensorboard_dir=tensorboard,
            patience=self.parameterAsInt(parameters, "PATIENCE", context),
            checkpoint_dir=checkpoints,
            folds=self.parameterAsInt(parameters, "FOLDS", context),
            initial_model=self.parameterAsFile(parameters, "MODEL", context) or None,
            freeze_layers=self.parameterAsInt(parameters, "FREEZE_LAYERS", context),
            augment=self.parameterAsBool(parameters, "AUGMENT", context),
            device=device(self, parameters, context),
        )
        result = self.run_engine(train, feedback, config)
        metrics = result.report
        held_out = result.training.get("validation", {})
        answer = {
            "OUTPUT_MODEL": str(result.model_folder),
            "OUTPUT_REPORT": str(result.report_html) if result.report_html else None,
            "OUTPUT_ONNX": self.parameterAsFileOutput(parameters, "OUTPUT_ONNX", context) or None,
            "EPOCHS_RUN": result.training.get("epochs_run"),
            "KEPT_EPOCH": result.training.get("kept_epoch"),
            "VALIDATION_METHOD": held_out.get("method"),
            "WARNINGS": held_out.get("warnings", []),
        }
        validated = result.training.get("cross_validation") or {}
        for key, value in validated.get("summary", {}).items():
            answer[f"CV_{key.upper()}"] = value["mean"]
        if "rmse" in metrics:
            return {**answer, **{key.upper(): metrics[key] for key in ("rmse", "mae", "bias", "r2")}}
        return {
            **answer,
            "OVERALL_ACCURACY": metrics["overall_accuracy"],
            "KAPPA": metrics["kappa"],
            "CLASSES": {
                c["name"]: {k: c[k] for k in ("precision", "recall", "f1", "support")} for c in metrics["classes"]
            },
            "CONFUSION_MATRIX": metrics["confusion_matrix"],
        }
