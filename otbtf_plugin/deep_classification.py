"""Classical classifiers on deep features: training from polygons or points,
sample extraction, training from vector fields, and image classification.

* Training samples: polygons go through sample selection (its strategies,
  nodata and CRS rules) on source 1; points are used as they are. Every
  sample remembers its polygon (``originfid`` of our sample points, else the
  feature itself) and the validation set holds out whole polygons.
* Image classification streams through the serving engine: features of a
  tile -> classifier -> class map (smallest integer type, styled with the class
  names) and, optionally, the confidence (probability of the chosen class).
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from . import classifiers
from .errors import InputError
from .features import FeatureSpec, OpenFeatures, open_features, recipe_differences, recipe_notes
from .grid import tiles
from .outputs import Output, StagedOutputs, check_paths, geotiff
from .pipeline import Executor, LocalThreads, TileWork, absolute, raster_outputs
from .progress import NullProgress, Progress, ScaledProgress
from .raster import GDAL_IO, AlignedRaster, class_code_types, crs_wkt, open_raster
from .selection import sample_selection
from .serving.output import output_profile
from .serving.tiles import TileInput, infer_tile, read_tile, tile_is_empty
from .styles import write_class_style, write_confidence_style
from .vector import read_features, read_fields, transform_xy, write_points

RECIPE_TAG = "OTBTF_FEATURE_RECIPE"


@dataclass
class TrainingSamples:
    x: np.ndarray  # in source 1's CRS
    y: np.ndarray
    codes: np.ndarray
    groups: np.ndarray  # polygon (or point) each sample comes from
    class_names: dict[int, str]
    messages: list[str] = field(default_factory=list)


def training_samples(spec: FeatureSpec, vector, field_name: str, strategy: str = "smallest",
                     value: float | None = None, seed: int = 0, layer: str | None = None,
                     progress: Progress | None = None) -> TrainingSamples:
    """Sample positions and classes from polygons (sample selection on source 1) or points."""
    progress = progress or NullProgress()
    feats = read_features(vector, field_name, None, layer)
    if not len(feats.fids):
        raise InputError(f"the vector {str(vector)!r} has no feature with a class in field {field_name!r}")
    if feats.geometry_types() - {"Point"}:
        samples = sample_selection(spec.sources[0].path, vector, field_name, nodata=spec.sources[0].nodata,
                                   strategy=strategy, value=value, seed=seed, layer=layer, progress=progress)
        return TrainingSamples(samples.x, samples.y, samples.codes, samples.fids, samples.class_names,
                               list(samples.warnings))
    with open_raster(spec.sources[0].path) as ds:
        x, y = transform_xy(feats.point_x, feats.point_y, feats.crs_wkt, crs_wkt(ds))
    fid = feats.fids[feats.point_feature]
    groups = fid
    fids_all, origin, _ = _optional_field(vector, "originfid", layer)
    if origin is not None:
        lookup = dict(zip(fids_all.tolist(), origin.tolist(), strict=True))
        groups = np.asarray([lookup[f] for f in fid.tolist()], dtype=np.int64)
    return TrainingSamples(np.asarray(x), np.asarray(y), feats.codes[feats.point_feature], groups,
                           feats.class_names)


def _optional_field(vector, name: str, layer: str | None):
    try:
        fids, values, metadata = read_fields(vector, [name], layer)
    except InputError:
        return None, None, {}
    if np.isnan(values[name]).any():
        return None, None, metadata
    return fids, values[name].astype(np.int64), metadata


@dataclass
class TrainResult:
    classifier: Path
    report: Path | None
    trained: classifiers.TrainedClassifier
    rejected: dict[str, int]
    messages: list[str]


def _classifier_outputs(output, report_path) -> dict:
    return {"OUTPUT_CLASSIFIER": output,
            "OUTPUT_REPORT": Output(report_path, companions=(".json",)) if report_path else None}


def _finish_training(trained, output, report_path, title, rejected, messages) -> TrainResult:
    trained.warnings = messages + trained.warnings
    with StagedOutputs() as staged:
        path = classifiers.save(trained, output, staged)
        report = classifiers.write_report(report_path, trained, title, staged) if report_path else None
        staged.commit()
    return TrainResult(path, report, trained, rejected, trained.warnings)


def train_from_features(spec: FeatureSpec, vector, field_name: str, output, report_path=None,
                        classifier: str = "rf", params: str | None = None, seed: int = 0,
                        validation: float = 0.3, strategy: str = "smallest", value: float | None = None,
                        layer: str | None = None, progress: Progress | None = None) -> TrainResult:
    """otbtf:trainclassifierfromdeepfeatures."""
    progress = progress or NullProgress()
    check_paths({**spec.input_paths(), "VECTOR": vector}, _classifier_outputs(output, report_path))
    classifiers.make_classifier(classifier, params, seed)  # bad parameters fail before any work
    samples = training_samples(spec, vector, field_name, strategy, value, seed, layer,
                               ScaledProgress(progress, 0.0, 0.3))
    with ExitStack() as stack:
        opened = open_features(spec, stack)
        values, ok, rejected = opened.values_at(samples.x, samples.y, ScaledProgress(progress, 0.3, 0.5))
        recipe = opened.recipe
    messages = list(samples.messages) + [f"{n} sample(s) rejected: {why}" for why, n in rejected.items()]
    for message in messages:
        progress.info(message)
    trained = classifiers.train(values[ok], samples.codes[ok], samples.groups[ok], samples.class_names, recipe,
                                classifier, params, seed, validation)
    progress.step(1000, 1000)
    return _finish_training(trained, output, report_path, "Classifier on deep features", rejected, messages)


def sample_extraction(spec: FeatureSpec, vector, output, field_name: str | None = None,
                      layer: str | None = None, progress: Progress | None = None) -> tuple[Path, int, dict]:
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
    fields["originfid"] = (part_fid[ok].tolist(), "Integer64")
    if field_name:
        codes = feats.codes[feats.point_feature][ok]
        fields[field_name] = ([feats.class_names[int(c)] for c in codes], "String") if feats.string_classes \
            else (codes.tolist(), "Integer64")
    for k, name in enumerate(names):
        fields[name] = (values[ok, k].tolist(), "Real")
    for why, n in rejected.items():
        progress.info(f"{n} point(s) skipped: {why}")
    path = write_points(output, "samples", wkt, np.asarray(x)[ok], np.asarray(y)[ok], fields,
                        {RECIPE_TAG: json.dumps(recipe)})
    return path, int(ok.sum()), rejected


def train_vector_classifier(vector, features: list[str], field_name: str, output, report_path=None,
                            classifier: str = "rf", params: str | None = None, seed: int = 0,
                            validation: float = 0.3, layer: str | None = None,
                            progress: Progress | None = None) -> TrainResult:
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
    _, origin, _ = _optional_field(vector, "originfid", layer)
    groups = feats.fids if origin is None else origin[rows]
    recipe = {"fields": list(features), "features": list(features)}
    stored = metadata.get(RECIPE_TAG)
    if stored:  # points written by sample extraction: keep how their features were made
        extracted = json.loads(stored)
        if extracted.get("features") == list(features):
            recipe = extracted
        else:
            messages.append("FEATURES is not the full list of extracted features, in order: this classifier "
                            "can classify vectors, not images")
    trained = classifiers.train(matrix[complete], feats.codes[complete], groups[complete], feats.class_names,
                                recipe, classifier, params, seed, validation)
    progress.step(1, 1)
    return _finish_training(trained, output, report_path, "Vector classifier", {}, messages)


def class_map_type(codes) -> tuple[str, int]:
    """Smallest GeoTIFF integer type for the class codes, and a nodata value that is not a code."""
    codes = [int(c) for c in codes]
    low, high = min(codes), max(codes)
    for dtype, lo, hi in class_code_types(low, high):
        if dtype == "int64":  # a class map stays readable by every GIS: 32 bits at most
            break
        candidates = [0, hi, lo] if lo == 0 else [lo, hi]
        free = [v for v in candidates if v not in codes]
        if free:
            return dtype, free[0]
    raise InputError(f"class codes {low} .. {high} do not fit a 32-bit class map")


class _Parallel:
    """A decision function (see :func:`classifiers.decision_function`) over chunks on a
    pool of this run's threads (scikit-learn's trees and neighbours release the GIL).
    joblib's own threading starts a pool per call and polls it, which cost more than
    the prediction on every tile."""

    def __init__(self, decide):
        self.decide = decide
        self.workers = max(1, os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="otbtf-classify")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True)

    def __call__(self, table: np.ndarray):
        if len(table) < 4096 or self.workers == 1:
            return self.decide(table)
        parts = list(self.pool.map(self.decide, np.array_split(table, self.workers)))
        best = np.concatenate([part[0] for part in parts])
        return best, None if parts[0][1] is None else np.concatenate([part[1] for part in parts])


class Decisions:
    """Rows of features -> (index of the most probable class, its probability or None
    when the confidence is not wanted).

    For tree models the prediction of a row depends only on its cell (see
    :class:`classifiers.ThresholdCells`): each cell is predicted once per run and
    remembered (up to :attr:`CACHE_CELLS` cells), so a tile costs the numbering of
    its cells, a lookup and the prediction of cells never seen before. Cells are
    looked up in a table indexed by cell when the model has at most
    :attr:`DENSE_CELLS` of them, else by binary search in the sorted cells seen.
    When, after four tiles, new cells are more than three quarters of the rows seen
    (deep features, fine thresholds), rows are predicted as they come. Exact either
    way: the classes and probabilities of ``predict_proba`` row by row.
    """

    CACHE_CELLS = 1 << 22  # decisions remembered: 8 bytes each (+ 12 for the sorted index), 80 MiB at most
    DENSE_CELLS = 1 << 22  # a table of 4 bytes per cell: 16 MiB at most

    def __init__(self, estimator, confidence: bool = True):
        self.rows = classifiers.decision_function(estimator, confidence)  # a local run makes it parallel
        self.cells = classifiers.threshold_cells(estimator)
        self.lock = threading.Lock()
        self.rows_seen = self.cells_new = self.calls = 0  # to give up the cells when they do not pay
        self.best: np.ndarray = np.zeros(0, dtype=np.int32)  # decisions of the cells seen, in the order first seen
        self.confidence: np.ndarray | None = np.zeros(0, dtype=np.float32) if confidence else None
        self.table: np.ndarray | None = None  # dense: cell -> decision, -1 when not seen
        # otherwise: the cells seen, sorted, and their decisions
        self.sorted_keys: np.ndarray = np.zeros(0, dtype=np.int64)
        self.sorted_slots: np.ndarray = np.zeros(0, dtype=np.int32)

    def __call__(self, table: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.cells is None or (self.calls >= 4 and 4 * self.cells_new > 3 * self.rows_seen):
            return self.rows(table)
        keys = self.cells.keys(table)
        with self.lock:
            self.calls += 1
            self.rows_seen += len(keys)
            slots = self._slots(keys)
            missing = np.flatnonzero(slots < 0)
            if not len(missing):
                return self.best[slots], None if self.confidence is None else self.confidence[slots]
            new, first, inverse = np.unique(keys[missing], return_index=True, return_inverse=True)
            self.cells_new += len(new)
            best, confidence = self.rows(table[missing[first]])
            result = self._merge(slots, missing, inverse.ravel(), best, confidence)
            if len(self.best) + len(new) <= self.CACHE_CELLS:  # else: decided for this tile only
                self._remember(new, best, confidence)
            return result

    def _merge(self, slots, missing, inverse, best, confidence):
        """Known cells from the cache, the others from this tile's new predictions."""
        found = np.flatnonzero(slots >= 0)
        all_best = np.empty(len(slots), dtype=np.int32)
        all_best[found], all_best[missing] = self.best[slots[found]], best[inverse]
        if confidence is None:
            return all_best, None
        all_confidence = np.empty(len(slots), dtype=np.float32)
        all_confidence[found], all_confidence[missing] = self.confidence[slots[found]], confidence[inverse]
        return all_best, all_confidence

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        cells = self.cells
        if cells is None:  # not a tree model: nothing is remembered
            return np.full(len(keys), -1, dtype=np.int32)
        if cells.count <= self.DENSE_CELLS:
            if self.table is None:
                self.table = np.full(cells.count, -1, dtype=np.int32)
            return self.table[keys]
        if not len(self.sorted_keys):
            return np.full(len(keys), -1, dtype=np.int32)
        where = np.minimum(np.searchsorted(self.sorted_keys, keys), len(self.sorted_keys) - 1)
        slots = self.sorted_slots[where]
        slots[self.sorted_keys[where] != keys] = -1
        return slots

    def _remember(self, new: np.ndarray, best: np.ndarray, confidence: np.ndarray | None) -> None:
        numbers = np.arange(len(self.best), len(self.best) + len(new), dtype=np.int32)
        self.best = np.concatenate([self.best, best])
        if self.confidence is not None:
            self.confidence = np.concatenate([self.confidence, confidence])
        if self.table is not None:
            self.table[new] = numbers
        else:
            at = np.searchsorted(self.sorted_keys, new)
            self.sorted_keys = np.insert(self.sorted_keys, at, new)
            self.sorted_slots = np.insert(self.sorted_slots, at, numbers)


@dataclass
class ClassifyResult:
    output: Path
    confidence: Path | None
    style: Path | None
    tiles: int
    skipped_tiles: int


class _Grid:
    """An output profile in the form AlignedRaster reads (crs, transform, shape)."""

    def __init__(self, profile: dict):
        self.crs, self.transform = profile["crs"], profile["transform"]
        self.width, self.height = profile["width"], profile["height"]
        self.shape = (self.height, self.width)


class TileClassifier:
    """Features of a tile -> class codes and confidence; the same on this machine and on
    a cluster worker (which builds its own from the same inputs)."""

    def __init__(self, spec: FeatureSpec, trained, mask, stack: ExitStack, check: bool = True,
                 confidence: bool = True):
        self.opened: OpenFeatures = open_features(spec, stack)
        self.plan, self.datasets = self.opened.plan, self.opened.datasets  # what serving.tiles.read_tile reads
        self.notes: list[str] = []
        if check:  # cluster workers skip it: the client checked the same inputs
            differences = recipe_differences(trained.recipe, self.opened.recipe)
            if differences:
                raise InputError("the classifier does not match these inputs: " + "; ".join(differences))
            self.notes = recipe_notes(trained.recipe, self.opened.recipe)
        self.estimator = trained.estimator
        self.dtype, self.nodata = class_map_type(trained.codes)
        self.confidence = confidence
        self.decide = Decisions(self.estimator, confidence)
        self.codes = np.asarray(self.estimator.classes_)
        self.profile = output_profile(self.opened.plan, self.opened.datasets[0].crs, 1, self.dtype, "none")
        self.mask = None
        if mask:
            self.mask = AlignedRaster(mask, _Grid(self.profile))
            stack.callback(self.mask.close)

    def __call__(self, item, progress: Progress) -> tuple[np.ndarray, np.ndarray | None]:
        """Class codes and confidence (None when not wanted) of a tile."""
        tile, plan = item.tile, self.opened.plan
        values = infer_tile(plan, self.opened.model, item, progress)  # (features, h, w)
        invalid = np.zeros((tile.height, tile.width), dtype=bool)
        if item.arrays is None:
            invalid[:] = True
        elif item.background is not None:
            invalid |= item.background
        if self.mask is not None:
            with GDAL_IO:
                invalid |= ~self.mask.read_mask(tile)
        classes = np.full(tile.height * tile.width, self.nodata, dtype=self.dtype)
        scores = np.full(tile.height * tile.width, -1.0, dtype=np.float32) if self.confidence else None
        keep = np.flatnonzero(~invalid.ravel())
        if len(keep):
            table = values.reshape(values.shape[0], -1).T[keep]
            if not np.isfinite(table).all():
                table = np.nan_to_num(table, nan=0.0, posinf=0.0, neginf=0.0)
            best, confidence = self.decide(table)
            classes[keep] = self.codes[best].astype(self.dtype)
            if scores is not None:
                scores[keep] = confidence
        shape = (tile.height, tile.width)
        return classes.reshape(shape), None if scores is None else scores.reshape(shape)


def load_image_classifier(classifier_path):
    trained = classifiers.load(classifier_path)
    if "sources" not in trained.recipe:
        raise InputError(f"{Path(classifier_path).name} was trained on vector fields "
                         f"({', '.join(trained.recipe.get('fields', []))}), not on image features: train it with "
                         "otbtf:trainclassifierfromdeepfeatures, or with otbtf:trainvectorclassifier on every "
                         "field written by otbtf:sampleextractionfromdeepfeatures")
    return trained


def build_classifier_state(spec: FeatureSpec, classifier_path: str, mask, confidence: bool,
                           stack: ExitStack) -> TileClassifier:
    """A run's tile classifier, built again where the tiles are computed (a cluster worker)."""
    trained = load_image_classifier(classifier_path)
    classifiers.single_threaded(trained.estimator)  # the worker's own threads are its parallelism
    return TileClassifier(spec, trained, mask, stack, check=False, confidence=confidence)


def compute_classifier_tile(state: TileClassifier, item: TileInput, progress: Progress):
    return state(item, progress)


def classify_image(spec: FeatureSpec, classifier_path, output, confidence=None, mask=None,
                   compress: str = "zstd", progress: Progress | None = None,
                   executor: Executor | None = None) -> ClassifyResult:
    """otbtf:imageclassifierfromdeepfeatures, with ``executor`` computing the tiles (default: this
    machine)."""
    progress = progress or NullProgress()
    executor = executor or LocalThreads()
    check_paths({**spec.input_paths(), "CLASSIFIER": classifier_path, "MASK": mask},
                {"OUTPUT": geotiff(output), "OUTPUT_CONFIDENCE": geotiff(confidence)})
    trained = load_image_classifier(classifier_path)
    with ExitStack() as stack:
        classify = TileClassifier(spec, trained, mask, stack, confidence=bool(confidence))
        opened, plan = classify.opened, classify.opened.plan
        for note in classify.notes:
            progress.info(note)
        plan_tiles = tiles(plan.grid.width, plan.grid.height, plan.tile)
        crs = opened.datasets[0].crs
        rasters = [(output, output_profile(plan, crs, 1, classify.dtype, compress) | {"nodata": classify.nodata},
                    ["class"])]
        if confidence:
            rasters.append((confidence, output_profile(plan, crs, 1, "float32", compress) | {"nodata": -1.0},
                            ["confidence"]))
        absolute_spec = replace(spec, sources=[replace(s, path=absolute(s.path)) for s in spec.sources],
                                model=absolute(spec.model) if spec.model else None)
        work = TileWork(build=partial(build_classifier_state, absolute_spec, absolute(classifier_path),
                                      absolute(mask) if mask else None, bool(confidence)),
                        read=read_tile, compute=compute_classifier_tile, empty=tile_is_empty)
        if executor.local:  # the trees on a pool of this run's threads
            classifiers.single_threaded(trained.estimator)
            classify.decide.rows = stack.enter_context(_Parallel(classify.decide.rows))
        with raster_outputs(rasters) as out:
            def write(tile, result):  # called under the GDAL lock
                classes, scores = result
                out.writers[0].write(classes, 1, window=tile.to_rasterio())
                if confidence:
                    out.writers[1].write(scores, 1, window=tile.to_rasterio())

            skipped = executor.run(work, plan_tiles, write, progress, classify)
            style = write_class_style(output, trained.classes, out.staged)
            if confidence:
                write_confidence_style(confidence, out.staged)
    return ClassifyResult(Path(output), Path(confidence) if confidence else None, style, len(plan_tiles), skipped)
