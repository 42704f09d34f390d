"""What a training run tells its user: the validation report (HTML with learning curves,
JSON beside it) and the validation scores for TensorBoard."""

from __future__ import annotations

import io
from pathlib import Path

from .. import report_writer
from ..models.metadata import ModelMetadata
from ..outputs import StagedOutputs


def curves_png(history: dict, kept_epoch: int | None = None) -> bytes:
    """Loss and accuracy (or MAE) per epoch, as PNG. Drawn on an Agg canvas of its own: no
    pyplot, no change of the process' matplotlib backend (QGIS has its own)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.2))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    second = "accuracy" if "accuracy" in history else "mae"
    for axis, key in zip(axes, ("loss", second), strict=True):
        for name, style in ((key, "-"), (f"val_{key}", "--")):
            if name in history:
                axis.plot(range(1, len(history[name]) + 1), history[name], style, label=name)
        if kept_epoch:
            axis.axvline(kept_epoch, color="0.4", linewidth=1, linestyle=":", label=f"kept: epoch {kept_epoch}")
        axis.set_xlabel("epoch")
        axis.set_title(key)
        axis.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_report(
    path, metrics: dict, history: dict, metadata: ModelMetadata, staged: StagedOutputs | None = None
) -> Path:
    """The validation report as HTML (with the curves) and JSON beside it (same name, .json)."""
    training = metadata.training
    kept = training.get("kept_epoch")
    report = report_writer.Report(
        title="Training report",
        intro=[
            f"Task {metadata.task}, architecture {metadata.architecture}; {training['patches']} training and "
            f"{training['validation_patches']} validation patches; {_epochs_text(training)}."
        ],
        held_out=training.get("validation") or {},
        scores=metrics,
        cross_validation=training.get("cross_validation") or {},
        curves=curves_png(history, kept if training.get("patience") else None) if history else b"",
    )
    data = {
        "validation": metrics,
        "history": history,
        "task": metadata.task,
        "classes": metadata.class_dicts(),
        "cross_validation": training.get("cross_validation") or {},
    }
    return report_writer.write_report(path, report, data, staged)


def _epochs_text(training: dict) -> str:
    run, kept = training.get("epochs_run", training["epochs"]), training.get("kept_epoch")
    if not training.get("patience"):
        return f"{run} epochs"
    stop = "stopped early" if training.get("stopped_early") else f"at most {training['epochs']}"
    return (
        f"{run} epochs ({stop}, patience {training['patience']}); the weights of epoch {kept}, the lowest "
        "validation loss, are kept: the epoch was chosen on the validation patches, so their scores "
        "below flatter the model slightly"
    )


def tensorboard_validation(tf, folder: Path, metrics: dict, step: int) -> None:
    """The validation scores, and the confusion matrix as a table, for TensorBoard."""
    with tf.summary.create_file_writer(str(folder / "validation")).as_default():
        if "rmse" in metrics:
            for key in ("rmse", "mae", "bias", "r2"):
                tf.summary.scalar(f"validation/{key}", metrics[key], step=step)
            return
        tf.summary.scalar("validation/overall_accuracy", metrics["overall_accuracy"], step=step)
        tf.summary.scalar("validation/kappa", metrics["kappa"], step=step)
        names = [c["name"] for c in metrics["classes"]]
        rows = ["| truth \\ prediction | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        rows += [
            f"| {name} | " + " | ".join(str(v) for v in row) + " |"
            for name, row in zip(names, metrics["confusion_matrix"], strict=True)
        ]
        tf.summary.text("validation/confusion_matrix", "\n".join(rows), step=step)
