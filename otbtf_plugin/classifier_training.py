"""Classical classifiers trained on ground truth: on deep features sampled at polygons or
points (otbtf:trainclassifierfromdeepfeatures), on the fields of a vector
(otbtf:trainvectorclassifier), and the features written at points for other tools
(otbtf:sampleextractionfromdeepfeatures)."""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import classifiers
from .errors import InputError
from .features import FeatureSpec, open_features
from .ground_truth import training_samples
from .outputs import Output, StagedOutputs, check_paths
from .progress import NullProgress, Progress, ScaledProgress
from .raster import crs_wkt
from .selection import Strategy
from .vector import origins, read_features, read_fields, transform_xy, write_points

RECIPE_TAG = "OTBTF_FEATURE_RECIPE"


@dataclass
class TrainResult:
    classifier: Path
    report: Path | None
    trained: classifiers.TrainedClassifier
    rejected: dict[str, int]
    messages: list[str]


def _classifier_outputs(output, report_path) -> dict:
    return {
        "OUTPUT_CLASSIFIER": output,
        "OUTPUT_REPORT": Output(report_path, companions=(".json",)) if report_path else None,
    }


def _finish_training(trained, output, report_path, title, rejected, messages) -> TrainResult:
    trained.warnings = messages + trained.warnings
    with StagedOutputs() as staged:
        path = classifiers.save(trained, output, staged)
        report = classifiers.write_report(report_path, trained, title, staged) if report_path else None
        staged.commit()
    return TrainResult(path, report, trained, rejected, trained.warnings)


def train_from_features(
    spec: FeatureSpec,
    vector,
    field_name: str,
    output,
    report_path=None,
    classifier: str = "rf",
    params: str | None = None,
    seed: int = 0,
    validation: float = 0.3,
    strategy: Strategy = "all",
    value: float | None = None,
    folds: int = 0,
    layer: str | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """otbtf:trainclassifierfromdeepfeatures."""
    progress = progress or NullProgress()
    check_paths({**spec.input_paths(), "VECTOR": vector}, _classifier_outputs(output, report_path))
    classifiers.make_classifier(classifier, params, seed)  # bad parameters fail before any work
    samples = training_samples(
        spec, vector, field_name, strategy, value, seed, layer, ScaledProgress(progress, 0.0, 0.3)
    )
    with ExitStack() as stack:
        opened = open_features(spec, stack)
        values, ok, rejected = opened.values_at(samples.x, samples.y, ScaledProgress(progress, 0.3, 0.5))
        recipe = opened.recipe
    messages = list(samples.messages) + [f"{n} sample(s) rejected: {why}" for why, n in rejected.items()]
    for message in messages:
        progress.info(message)
    trained = classifiers.train(
        values[ok],
        samples.codes[ok],
        samples.groups[ok],
        samples.class_names,
        recipe,
        classifier,
        params,
        seed,
        validation,
        folds=folds,
    )
    progress.step(1000, 1000)
    return _finish_training(trained, output, report_path, "Classifier on deep features", rejected, messages)


def sample_extraction(
    spec: FeatureSpec,
    vector,
    output,
    field_name: str | None = None,
    layer: str | None = None,
    progress: Progress | None = None,
) -> tuple[Path, int, dict]:
    """otbtf:sampleextractionfromdeepfeatures: the points with one numeric field per feature
    (and the class field when given). Returns (path, points written, rejected)."""
    progress = progress or NullProgress()
    check_paths({**spec.input_paths(), "VECTOR": vector}, {"OUTPUT": output})
    feats = read_features(vector, field_name, None, layer)
    if feats.geometry_types() - {"Point"}:
        raise InputError("VECTOR must hold points; make points from polygons with otbtf:sampleselection first")
    if not len(feats.point_x):
        raise InputError(f"the vector {str(vector)!r} has no point")
    with ExitStack() as stack:
        opened = open_features(spec, stack)
        wkt = crs_wkt(opened.datasets[0])
        x, y = transform_xy(feats.point_x, feats.point_y, feats.crs_wkt, wkt)
        values, ok, rejected = opened.values_at(np.asarray(x), np.asarray(y), progress)
        recipe = opened.recipe
    if not ok.any():
        raise InputError("no point has features: " + "; ".join(f"{n} {why}" for why, n in rejected.items()))
    names = recipe["features"]
    fields: dict[str, tuple] = {}
    part_fid = feats.fids[feats.point_feature]
    polygon = origins(vector, part_fid, layer)  # sample points keep their polygon: validation holds it out whole
    fields["originfid"] = ((part_fid if polygon is None else polygon)[ok].tolist(), "Integer64")
    if field_name:
        codes = feats.codes[feats.point_feature][ok]
        fields[field_name] = (
            ([feats.class_names[int(c)] for c in codes], "String")
            if feats.string_classes
            else (codes.tolist(), "Integer64")
        )
    for k, name in enumerate(names):
        fields[name] = (values[ok, k].tolist(), "Real")
    for why, n in rejected.items():
        progress.info(f"{n} point(s) skipped: {why}")
    path = write_points(
        output, "samples", wkt, np.asarray(x)[ok], np.asarray(y)[ok], fields, {RECIPE_TAG: json.dumps(recipe)}
    )
    return path, int(ok.sum()), rejected


def train_vector_classifier(
    vector,
    features: list[str],
    field_name: str,
    output,
    report_path=None,
    classifier: str = "rf",
    params: str | None = None,
    seed: int = 0,
    validation: float = 0.3,
    layer: str | None = None,
    folds: int = 0,
    progress: Progress | None = None,
) -> TrainResult:
    """otbtf:trainvectorclassifier: features are fields of the vector."""
    progress = progress or NullProgress()
    check_paths({"VECTOR": vector}, _classifier_outputs(output, report_path))
    if not features:
        raise InputError("FEATURES is empty: give the numeric fields to classify with")
    classifiers.make_classifier(classifier, params, seed)
    feats = read_features(vector, field_name, None, layer)
    fids, values, metadata = read_fields(vector, features, layer)
    row_of = {f: k for k, f in enumerate(fids.tolist())}
    rows = np.asarray([row_of[f] for f in feats.fids.tolist()], dtype=np.int64)
    matrix = np.stack([values[name][rows] for name in features], axis=1)
    complete = ~np.isnan(matrix).any(axis=1)
    messages = []
    if (~complete).any():
        messages.append(f"{int((~complete).sum())} feature(s) with a NULL value skipped")
    origin = origins(vector, feats.fids, layer)
    groups = feats.fids if origin is None else origin
    recipe = {"fields": list(features), "features": list(features)}
    stored = metadata.get(RECIPE_TAG)
    if stored:  # points written by sample extraction: keep how their features were made
        extracted = json.loads(stored)
        if extracted.get("features") == list(features):
            recipe = extracted
        else:
            messages.append(
                "FEATURES is not the full list of extracted features, in order: this classifier "
                "can classify vectors, not images"
            )
    trained = classifiers.train(
        matrix[complete],
        feats.codes[complete],
        groups[complete],
        feats.class_names,
        recipe,
        classifier,
        params,
        seed,
        validation,
        folds=folds,
    )
    progress.step(1, 1)
    return _finish_training(trained, output, report_path, "Vector classifier", {}, messages)
