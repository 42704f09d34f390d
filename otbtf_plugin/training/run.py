"""Training's workflow, ``train()``: TensorFlow models from patches images (ours or otbtf's).

``train()`` goes: check the configuration and the paths, open the data (``data``), hold
out the validation patches, decide what to learn from the labels (``targets``), build or
load the network (``architectures``), fit, validate, and write the model folder and the
report (``report``) together.

The model folder holds ``savedmodel/`` (signature ``serving_default``), ``model.keras`` and
``otbtf_model.json`` (``model_metadata``: what serving reads: input names, receptive
fields, expression field, scale, class codes and names, band statistics, history).
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import __version__, onnx_export
from ..errors import Cancelled, InputError
from ..grid import ModelGeometry
from ..metrics import confusion_matrix, fold_summary, regression_report
from ..metrics import report as accuracy_report
from ..models.devices import Device, check_device, tensorflow_device
from ..models.metadata import BandStatistics, ModelClass, ModelInput, ModelMetadata, model_folder_output, write_metadata
from ..outputs import Output, StagedOutputs, check_paths
from ..patches_image import origins_path
from ..progress import NullProgress, Progress, check_cancelled, warn
from ..validation import GroupSplit, check_fraction, group_folds, hold_out_groups
from .architectures import ARCHITECTURES, BUILDERS, Architecture, fine_tune_start, keras_module
from .data import (
    TrainingSet,
    align_classes,
    band_statistics,
    batches,
    batches_per_epoch,
    hold_out,
    patch_groups,
    predict,
)
from .report import tensorboard_validation, write_report
from .schedule import Checkpoints, ScheduleState, checkpoint_output, fingerprint, schedule_callback
from .targets import TASKS, Target, TaskChoice, class_weights, decide_target


@dataclass
class TrainConfig:
    """A training run. The defaults (at most 100 epochs, PATIENCE 10, augmentation, no class
    weights) were chosen on held-out polygons of nc_landsat7 (README, scripts/measure_accuracy.py)."""

    train_patches: list  # one patches image per source
    train_labels: str | Path
    output_model: str | Path
    valid_patches: list | None = None
    valid_labels: str | Path | None = None
    output_report: str | Path | None = None
    output_onnx: str | Path | None = None  # the model also as one ONNX file (onnx_export)
    architecture: Architecture = "cnn"
    epochs: int = 100  # a maximum: PATIENCE stops earlier
    batch_size: int = 32
    seed: int = 0
    learning_rate: float = 1e-3
    # Off: on held-out polygons of nc_landsat7, weighting classes by rarity cost the cnn 7
    # points of overall accuracy with early stopping (scripts/measure_accuracy.py --networks-only).
    class_weights: bool = False
    valid_fraction: float = 0.2  # held out of the training patches when no validation set is given
    tensorboard_dir: str | Path | None = None
    patience: int = 10  # stop when the validation loss has not improved for this many epochs (0: never)
    checkpoint_dir: str | Path | None = None  # a checkpoint after every epoch; the same folder resumes
    folds: int = 0  # > 1: cross-validation grouped by polygon in that many folds, in the report
    class_names: dict = field(default_factory=dict)  # code -> name (default: from the labels' metadata)
    initial_model: str | Path | None = None  # fine-tune: a model folder of ours or a .keras file
    freeze_layers: int = 0  # fine-tune: keep the weights of the first N layers (those with weights)
    augment: bool = True  # random flips and 90-degree rotations of the training patches
    task: TaskChoice = "auto"  # auto (labels decide), classification, regression
    device: Device = "auto"  # auto (a GPU TensorFlow sees, else the CPU), cpu, gpu (models.devices)


@dataclass
class TrainResult:
    model_folder: Path
    report: dict
    report_html: Path | None
    history: dict
    training: dict = field(default_factory=dict)  # the metadata's account: epochs, kept epoch, validation split


@dataclass
class _Split:
    """The training patches and the validation patches (a set of their own, or held out)."""

    train: TrainingSet
    train_idx: np.ndarray
    valid: TrainingSet
    valid_idx: np.ndarray
    held_out: GroupSplit | None = None  # how the validation patches were held out (None: a set of their own)
    recoded: str | None = None  # how the validation labels' codes were matched to training's, for the log

    def describe(self) -> dict:
        """How validation was made, for the report and the model's metadata."""
        if self.held_out is None:
            return {
                "method": "an independent validation set (VALID_PATCHES, VALID_LABELS)",
                "training_samples": len(self.train_idx),
                "validation_samples": len(self.valid_idx),
                "groups": {},
                "warnings": [],
            }
        return self.held_out.as_dict(self.train.class_names())

    def close(self) -> None:
        self.train.close()
        if self.valid is not self.train:
            self.valid.close()


def train(config: TrainConfig, progress: Progress | None = None) -> TrainResult:
    """Train a model on patches images and write the model folder and the report."""
    progress = progress or NullProgress()
    output = _check(config)
    keras = keras_module()
    import tensorflow as tf

    device, said = tensorflow_device(tf.config.list_physical_devices("GPU"), config.device)
    progress.info(f"device: {said}")
    with tf.device(device):  # the model's variables and its training on the chosen device
        split = _open_split(config)
        try:
            _log_split(split.describe(), progress)
            if split.recoded:
                progress.info(split.recoded)
            labels = split.train.read_labels(split.train_idx)
            names = {**split.train.class_names(), **{int(k): str(v) for k, v in config.class_names.items() if v}}
            target = decide_target(
                config.task, config.architecture, split.train.layout, labels, bool(config.initial_model), names
            )
            sources = [_input_spec(config, k, image, split.train_idx) for k, image in enumerate(split.train.images)]
            tf.config.experimental.enable_op_determinism()
            training_model, served, sources = _compiled_networks(keras, config, target, sources, progress)
            efield = int(training_model.output.shape[1]) if split.train.layout == "segmentation" else 1
            # Label patches are cut to the model's output block, where serving puts it (grid rule).
            span = ModelGeometry(int(sources[0].rfield or 1), efield).output_span if efield > 1 else None
            truth = _validation_truth(split, target, span)
            validated = (
                _cross_validate(keras, config, split.train, target, sources, span, progress) if config.folds > 1 else {}
            )
            schedule = _fit(keras, config, split, target, labels, training_model, span, progress)
            history = schedule.history
            metrics = _validate(training_model, split, target, truth)
            metadata = _metadata(config, target, sources, efield, served, schedule, split)
            metadata.training["cross_validation"] = validated
            if config.tensorboard_dir:
                tensorboard_validation(tf, Path(config.tensorboard_dir), metrics, config.epochs)
            report_html = None
            with StagedOutputs() as staged:
                _write_model_folder(staged.folder(model_folder_output(output)), served, metadata)
                if config.output_onnx:
                    progress.info(f"writing the model as ONNX: {config.output_onnx}")
                    onnx_export.write_model(keras, served, metadata, Path(config.output_onnx), staged)
                if config.output_report:
                    report_html = write_report(config.output_report, metrics, history, metadata, staged)
                staged.commit()
        finally:
            split.close()
    if target.regression:
        progress.info(f"validation: RMSE {metrics['rmse']:.4g}, MAE {metrics['mae']:.4g}, R2 {metrics['r2']:.3f}")
    else:
        progress.info(f"validation: overall accuracy {metrics['overall_accuracy']:.3f}, kappa {metrics['kappa']:.3f}")
    return TrainResult(output, metrics, report_html, history, metadata.training)


def _check(config: TrainConfig) -> Path:
    """The options and the paths, before TensorFlow is loaded; returns the model folder."""
    if config.architecture not in ARCHITECTURES:
        raise InputError(f"unknown architecture {config.architecture!r}; use one of: {', '.join(ARCHITECTURES)}")
    if config.task not in TASKS:
        raise InputError(f"unknown task {config.task!r}; use one of: {', '.join(TASKS)}")
    check_device(config.device)
    if config.epochs < 1 or config.batch_size < 1:
        raise InputError(f"EPOCHS ({config.epochs}) and BATCH_SIZE ({config.batch_size}) must be at least 1")
    if config.folds == 1 or config.folds < 0:
        raise InputError(f"FOLDS={config.folds}: give 0 (no cross-validation) or at least 2 folds")
    if config.patience < 0:
        raise InputError(f"PATIENCE={config.patience}: give a number of epochs, 0 to train all EPOCHS")
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise InputError(
            f"LEARNING_RATE = {config.learning_rate} is not accepted: give a number above 0 (the default is 0.001)"
        )
    check_fraction(config.valid_fraction, "VALID_FRACTION")  # hold_out_groups would name VALIDATION
    output = Path(config.output_model)
    if not output.parent.is_dir():
        raise InputError(f"output folder {str(output.parent)!r} does not exist")
    if config.valid_patches and len(config.valid_patches) != len(config.train_patches):
        raise InputError(
            f"{len(config.train_patches)} training sources but {len(config.valid_patches)} "
            "validation sources: give one validation patches image per source"
        )
    check_paths(
        {
            "TRAIN_PATCHES": config.train_patches,
            "TRAIN_LABELS": config.train_labels,
            "VALID_PATCHES": config.valid_patches,
            "VALID_LABELS": config.valid_labels,
            "MODEL": config.initial_model,
        },
        {
            "OUTPUT_MODEL": model_folder_output(output),
            "OUTPUT_REPORT": Output(config.output_report, companions=(".json",)) if config.output_report else None,
            "CHECKPOINT_DIR": checkpoint_output(config.checkpoint_dir) if config.checkpoint_dir else None,
            "TENSORBOARD_DIR": Output(config.tensorboard_dir, "into") if config.tensorboard_dir else None,
            "OUTPUT_ONNX": Output(config.output_onnx, suffixes=(".onnx",)) if config.output_onnx else None,
        },
    )
    return output


def _open_split(config: TrainConfig) -> _Split:
    """The training set and its validation patches: VALID_* when given, else a held-out share."""
    data = TrainingSet(config.train_patches, config.train_labels, "training")
    try:
        if not config.valid_patches:
            held_out = hold_out(data, config.train_labels, config.valid_fraction, config.seed)
            return _Split(
                data, np.flatnonzero(~held_out.validation), data, np.flatnonzero(held_out.validation), held_out
            )
        valid = TrainingSet(config.valid_patches, config.valid_labels, "validation")
    except BaseException:
        data.close()
        raise
    split = _Split(data, np.arange(data.count), valid, np.arange(valid.count))
    if valid.layout != data.layout:
        split.close()
        raise InputError(f"training labels are for {data.layout}, validation labels for {valid.layout}")
    try:
        split.recoded = align_classes(data, valid)
    except InputError:
        split.close()
        raise
    return split


def _log_split(held_out: dict, progress: Progress) -> None:
    progress.info(
        f"validation: {held_out['validation_samples']} patches held out {held_out['method']}, "
        f"{held_out['training_samples']} for training"
    )
    for name, sides in held_out["groups"].items():
        progress.info(f"  {name}: {sides['training']} group(s) for training, {sides['validation']} held out")
    for warning in held_out["warnings"]:
        warn(progress, warning)


def _input_spec(config: TrainConfig, k: int, image, indices: np.ndarray) -> ModelInput:
    """Input ``x<k+1>``: its patch size, bands and band statistics over the training patches."""
    if image.patch_width != image.patch_height:
        raise InputError(f"{Path(image.path).name}: the {config.architecture} architecture needs square patches")
    mean, std = band_statistics(image, indices)
    return ModelInput(
        f"x{k + 1}",
        rfield=image.patch_width,
        bands=image.bands,
        band_statistics=BandStatistics(tuple(mean), tuple(std)),
    )


def _compiled_networks(keras, config: TrainConfig, target: Target, sources: list[ModelInput], progress: Progress):
    """:func:`_networks` from the seed, the training model compiled."""
    keras.utils.set_random_seed(config.seed)
    training_model, served, sources = _networks(keras, config, target, sources, progress)
    training_model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="mse" if target.regression else "sparse_categorical_crossentropy",
        metrics=["mae"] if target.regression else ["accuracy"],
    )
    return training_model, served, sources


def _cross_validate(
    keras,
    config: TrainConfig,
    data: TrainingSet,
    target: Target,
    sources: list[ModelInput],
    span: slice | None,
    progress: Progress,
) -> dict:
    """FOLDS: the training patches shared out in folds of whole polygons (``validation``);
    for each fold, a new network trained on the others (their own polygons held out for
    PATIENCE), scored on it. Band statistics are those of all the training patches."""
    found = patch_groups(data, config.train_labels)
    fold = group_folds(found.strata, found.groups, config.folds, config.seed)
    inner = replace(config, checkpoint_dir=None, tensorboard_dir=None, folds=0)
    per_fold, truths, guesses = [], [], []
    for k in range(config.folds):
        rest, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        held = hold_out_groups(found.strata[rest], found.groups[rest], config.valid_fraction, config.seed).validation
        # Nothing of the other folds can be held out for PATIENCE: all their epochs, the last kept.
        run = inner if held.any() else replace(inner, patience=0)
        split = _Split(data, rest[~held], data, rest[held]) if held.any() else _Split(data, rest, data, rest)
        if not held.any():
            progress.info(
                f"cross-validation fold {k + 1}: no polygon of the other folds can be held out for "
                "PATIENCE; all EPOCHS are trained"
            )
        model, _, _ = _compiled_networks(keras, run, target, sources, NullProgress())
        _fit(keras, run, split, target, data.read_labels(split.train_idx), model, span, progress)
        check_cancelled(progress, "cross-validation")
        truth = _validation_truth(_Split(data, split.train_idx, data, test), target, span)
        guess = predict(model, data, test, target.regression)
        scores = _scores(truth, guess, target)
        per_fold.append(scores)
        truths.append(truth)
        guesses.append(guess)
        progress.info(f"cross-validation fold {k + 1} of {config.folds}: " + _scores_text(scores))
    return fold_summary(per_fold, _scores(np.concatenate(truths), np.concatenate(guesses), target))


def _scores_text(scores: dict) -> str:
    if "rmse" in scores:
        return f"RMSE {scores['rmse']:.4g}, R2 {scores['r2']:.3f}"
    return f"overall accuracy {scores['overall_accuracy']:.3f}, kappa {scores['kappa']:.3f}"


def _networks(keras, config: TrainConfig, target: Target, sources: list[ModelInput], progress: Progress):
    """(training model, served model, inputs): built anew, or loaded for fine-tuning with its
    first FREEZE_LAYERS layers frozen."""
    if not config.initial_model:
        build = BUILDERS[target.architecture]
        return (*build(keras, sources, len(target.codes), target.codes, target=target.statistics), sources)
    training_model, served, sources = fine_tune_start(keras, config.initial_model, sources, target.codes)
    frozen = [layer for layer in training_model.layers if layer.weights][: config.freeze_layers]
    for layer in frozen:
        layer.trainable = False
    if frozen:
        progress.info("frozen: " + ", ".join(layer.name for layer in frozen))
    return training_model, served, sources


def _validation_truth(split: _Split, target: Target, span: slice | None) -> np.ndarray:
    """The validation labels (label patches cut to the output block), checked against the
    training classes before the long fit."""
    truth = split.valid.read_labels(split.valid_idx)
    truth = truth if span is None else truth[:, span, span]
    if not target.regression:
        unknown = sorted(set(np.unique(truth).tolist()) - set(target.codes))
        if unknown:
            raise InputError(f"validation labels hold classes absent from training: {unknown}")
    return truth


def _fit(
    keras,
    config: TrainConfig,
    split: _Split,
    target: Target,
    labels: np.ndarray,
    model,
    span: slice | None,
    progress: Progress,
) -> ScheduleState:
    """Fit ``model`` on the training patches, validating each epoch, with the schedule (early
    stopping, learning rate on plateaus, checkpoints: ``schedule``); returns its final state."""
    label_index = target.label_index()
    weights = pixel_weights = None
    if config.class_weights and not target.regression:
        per_class = class_weights(target, labels)
        if target.task == "segmentation":  # Keras' class_weight is for one label per sample: weight pixels
            pixel_weights = per_class
        else:
            weights = {k: float(w) for k, w in enumerate(per_class)}
    # The key hashes every training file: computed only when there is a checkpoint to match.
    checkpoints = Checkpoints(config.checkpoint_dir, _run_key(config) if config.checkpoint_dir else "")
    state = checkpoints.load(model, model.optimizer) or ScheduleState(learning_rate=config.learning_rate)
    if state.epochs_done:
        progress.info(
            f"resuming from the checkpoint in {config.checkpoint_dir} after epoch {state.epochs_done}"
            + (" (training had stopped early: nothing more to train)" if state.stopped else "")
        )
    first = state.epochs_done
    last = first if state.stopped else max(config.epochs, first)
    model.optimizer.learning_rate = state.learning_rate
    training = batches(
        keras,
        split.train,
        split.train_idx,
        config.batch_size,
        label_index,
        config.seed,
        shuffle=True,
        label_span=span,
        pixel_weights=pixel_weights,
        augment=config.augment,
        first_epoch=first,
        epochs=max(last - first, 1),
    )
    validation = batches(
        keras, split.valid, split.valid_idx, config.batch_size, label_index, config.seed, shuffle=False, label_span=span
    )
    per_epoch = batches_per_epoch(len(split.train_idx), config.batch_size)
    schedule = schedule_callback(keras, config.patience, checkpoints, state, model.optimizer, progress.cancelled)
    callbacks = [_progress_callback(keras, progress, max(last - first, 1) * per_epoch), schedule]
    if config.tensorboard_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(config.tensorboard_dir)))
    model.fit(
        training,
        validation_data=validation,
        epochs=last,
        initial_epoch=first,
        steps_per_epoch=per_epoch,
        shuffle=False,
        class_weight=weights,
        callbacks=callbacks,
        verbose=0,
    )  # batches shuffle themselves
    if progress.cancelled():
        raise Cancelled(
            "training cancelled: no model was written"
            + (f" (the checkpoint in {config.checkpoint_dir} resumes it)" if config.checkpoint_dir else "")
        )
    if schedule.diverged:
        raise InputError(
            f"training diverged: {schedule.diverged}, so no model was written. LEARNING_RATE "
            f"{config.learning_rate:g} is probably too high: try the default 0.001, or ten times lower "
            "than the rate that diverged (if the rate is already small, check the patches for NaN values)"
        )
    if config.patience and state.best_epoch >= 0:
        progress.info(
            f"kept epoch {state.best_epoch + 1} of {state.epochs_done} (lowest validation loss "
            f"{state.best_loss:.4f})" + (": stopped early" if state.stopped else "")
        )
    return state


def _run_key(config: TrainConfig) -> str:
    """What a checkpoint must match: the settings that shape the run, and the data."""
    settings = {
        key: getattr(config, key)
        for key in (
            "architecture",
            "task",
            "batch_size",
            "seed",
            "learning_rate",
            "class_weights",
            "valid_fraction",
            "augment",
            "patience",
            "initial_model",
            "freeze_layers",
            "class_names",
        )
    }
    files = [
        *config.train_patches,
        config.train_labels,
        *(config.valid_patches or []),
        *([config.valid_labels] if config.valid_labels else []),
    ]
    origins = origins_path(config.train_labels)
    return fingerprint(settings, files + ([origins] if origins.is_file() else []))


def _validate(model, split: _Split, target: Target, truth: np.ndarray) -> dict:
    """Scores of ``model`` on the validation patches."""
    return _scores(truth, predict(model, split.valid, split.valid_idx, target.regression), target)


def _scores(truth: np.ndarray, predicted: np.ndarray, target: Target) -> dict:
    """Regression scores, or the classification report (``predicted``: class indices)."""
    if target.regression:
        return regression_report(truth, predicted)
    matrix = confusion_matrix(truth.astype(np.int64), np.asarray(target.codes)[predicted], target.codes)
    return accuracy_report(matrix, [target.names[c] for c in target.codes])


def _metadata(
    config: TrainConfig,
    target: Target,
    sources: list[ModelInput],
    efield: int,
    served,
    schedule: ScheduleState,
    split: _Split,
) -> ModelMetadata:
    stats = target.statistics
    return ModelMetadata(
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        otbtf_plugin=__version__,
        task=target.task,
        architecture=target.architecture,
        inputs=sources,
        efield=efield,
        scale=1,
        outputs={"value": "predicted value, in the labels' units"}
        if target.regression
        else {"prob": "class probabilities, in the order of classes", "class": "class code"},
        # Without OUTPUT_NAMES a classifier serves its class map (prob on request).
        default_outputs=["value"] if target.regression else ["class"],
        # Served only when named in OUTPUT_NAMES.
        extra_outputs={"features": "deep features: the network's values before its head"}
        if isinstance(served.output, dict) and "features" in served.output
        else {},
        target_statistics={"mean": stats[0], "std": stats[1]} if stats is not None else None,
        classes=[ModelClass(c, target.names[c]) for c in target.codes],
        training={
            "patches": len(split.train_idx),
            "validation_patches": len(split.valid_idx),
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "seed": config.seed,
            "learning_rate": config.learning_rate,
            "augment": config.augment,
            "fine_tuned_from": str(config.initial_model) if config.initial_model else None,
            "frozen_layers": config.freeze_layers if config.initial_model else 0,
            "patience": config.patience,
            "epochs_run": schedule.epochs_done,
            "kept_epoch": (schedule.best_epoch + 1 if config.patience else schedule.epochs_done),
            "stopped_early": schedule.stopped,
            "validation": split.describe(),
        },
        history=schedule.history,
    )


def _progress_callback(keras, progress: Progress, total: int):
    """A Keras callback reporting each batch and stopping after the batch when cancelled."""

    class ProgressCallback(keras.callbacks.Callback):
        done = 0

        def on_train_batch_end(self, batch, logs=None):
            self.done += 1
            progress.step(self.done, total)
            if progress.cancelled():
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            text = ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items())
            progress.info(f"epoch {epoch + 1}: {text}")

    return ProgressCallback()


def _write_model_folder(folder: Path, served, metadata: ModelMetadata) -> None:
    """SavedModel, .keras and metadata into ``folder`` (a staged temporary folder)."""
    served.export(str(folder / "savedmodel"), verbose=False)
    served.save(folder / "model.keras")
    write_metadata(folder, metadata)
