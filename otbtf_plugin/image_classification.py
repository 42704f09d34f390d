"""Image classification with a classical classifier on deep features
(otbtf:imageclassifierfromdeepfeatures): it streams through serving's tiles: features of a
tile -> classifier -> class map (smallest integer type, styled with the class names) and,
optionally, the confidence (probability of the chosen class). The tiles run on any
executor: this machine's threads or a Dask cluster."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from . import classifiers
from .errors import InputError
from .execution.pipeline import READERS, Executor, LocalThreads, TileWork, absolute, raster_outputs
from .features import FeatureSpec, OpenFeatures, open_features, recipe_differences, recipe_notes
from .grid import tiles
from .outputs import check_paths, geotiff
from .progress import NullProgress, Progress, tell
from .raster import AlignedRaster, PerThread, class_code_types
from .raster_writer import start_writer
from .serving.inference import TileInput, infer_tile, open_sources, read_tile, tile_is_empty
from .serving.options import Compression
from .serving.output import output_profile
from .styles import write_class_style, write_confidence_style


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

    def __init__(self, spec: FeatureSpec, trained, mask, stack: ExitStack, check: bool = True, confidence: bool = True):
        self.opened: OpenFeatures = open_features(spec, stack)
        # what serving.inference.read_tile reads: the sources, opened once per reading thread
        self.plan = self.opened.plan
        paths = [s.path for s in spec.sources]
        self.datasets = PerThread(partial(open_sources, paths, 1), stack, first=self.opened.datasets)
        self.notes: list[str] = []
        if check:  # cluster workers skip it: the client checked the same inputs
            differences = recipe_differences(trained.recipe, self.opened.recipe)
            if differences:
                raise InputError("the classifier does not match these inputs: " + "; ".join(differences))
            self.notes = recipe_notes(trained.recipe, self.opened.recipe)
        self.estimator = trained.estimator
        self.dtype, self.nodata = class_map_type(trained.codes)
        self.confidence = confidence
        self.decide = classifiers.Decisions(self.estimator, confidence)
        self.codes = np.asarray(self.estimator.classes_)
        self.profile = output_profile(self.opened.plan, self.opened.datasets[0].crs, 1, self.dtype, "none")
        self.mask = PerThread(partial(_open_mask, mask, _Grid(self.profile)), stack) if mask else None

    def __call__(
        self, item: TileInput, mask: np.ndarray | None, progress: Progress
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Class codes and confidence (None when not wanted) of a tile; ``mask``: its valid pixels."""
        tile, plan = item.tile, self.opened.plan
        values = infer_tile(plan, self.opened.model, item, progress)  # (features, h, w)
        invalid = np.zeros((tile.height, tile.width), dtype=bool)
        if item.arrays is None:
            invalid[:] = True
        elif item.background is not None:
            invalid |= item.background
        if mask is not None:
            invalid |= ~mask
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


def _open_mask(path, grid: _Grid, stack: ExitStack) -> AlignedRaster:
    mask = AlignedRaster(path, grid)
    stack.callback(mask.close)
    return mask


def load_image_classifier(classifier_path):
    trained = classifiers.load(classifier_path)
    if "sources" not in trained.recipe:
        raise InputError(
            f"{Path(classifier_path).name} was trained on vector fields "
            f"({', '.join(trained.recipe.get('fields', []))}), not on image features: train it with "
            "otbtf:trainclassifierfromdeepfeatures, or with otbtf:trainvectorclassifier on every "
            "field written by otbtf:sampleextractionfromdeepfeatures"
        )
    return trained


def build_classifier_state(
    spec: FeatureSpec, classifier_path: str, mask, confidence: bool, stack: ExitStack
) -> TileClassifier:
    """A run's tile classifier, built again where the tiles are computed (a cluster worker)."""
    trained = load_image_classifier(classifier_path)
    classifiers.single_threaded(trained.estimator)  # the worker's own threads are its parallelism
    return TileClassifier(spec, trained, mask, stack, check=False, confidence=confidence)


def read_classifier_tile(state: TileClassifier, tile) -> tuple[TileInput, np.ndarray | None]:
    """A tile's features input and its mask: every read of the tile, in the executor's read step."""
    return read_tile(state, tile), None if state.mask is None else state.mask.get().read_mask(tile)


def compute_classifier_tile(state: TileClassifier, item: tuple[TileInput, np.ndarray | None], progress: Progress):
    return state(*item, progress)


def classifier_tile_is_empty(item: tuple[TileInput, np.ndarray | None]) -> bool:
    return tile_is_empty(item[0])


def classify_image(
    spec: FeatureSpec,
    classifier_path,
    output,
    confidence=None,
    mask=None,
    compress: Compression = "zstd",
    progress: Progress | None = None,
    executor: Executor | None = None,
) -> ClassifyResult:
    """otbtf:imageclassifierfromdeepfeatures, with ``executor`` computing the tiles (default: this
    machine)."""
    progress = progress or NullProgress()
    executor = executor or LocalThreads(readers=READERS)
    check_paths(
        {**spec.input_paths(), "CLASSIFIER": classifier_path, "MASK": mask},
        {"OUTPUT": geotiff(output), "OUTPUT_CONFIDENCE": geotiff(confidence)},
    )
    start_writer()  # its imports overlap the classifier's and the model's loading
    trained = load_image_classifier(classifier_path)
    with ExitStack() as stack:
        classify = TileClassifier(spec, trained, mask, stack, confidence=bool(confidence))
        opened, plan = classify.opened, classify.opened.plan
        for note in classify.notes:
            tell(progress, note)
        if spec.model:
            progress.info(f"device: {opened.model.device}")
        plan_tiles = tiles(plan.grid.width, plan.grid.height, plan.tile)
        crs = opened.datasets[0].crs
        rasters = [
            (output, output_profile(plan, crs, 1, classify.dtype, compress) | {"nodata": classify.nodata}, ["class"])
        ]
        if confidence:
            rasters.append(
                (confidence, output_profile(plan, crs, 1, "float32", compress) | {"nodata": -1.0}, ["confidence"])
            )
        absolute_spec = replace(
            spec,
            sources=[replace(s, path=absolute(s.path)) for s in spec.sources],
            model=absolute(spec.model) if spec.model else None,
        )
        work = TileWork(
            build=partial(
                build_classifier_state,
                absolute_spec,
                absolute(classifier_path),
                absolute(mask) if mask else None,
                bool(confidence),
            ),
            read=read_classifier_tile,
            compute=compute_classifier_tile,
            empty=classifier_tile_is_empty,
        )
        if executor.local:  # the trees on a pool of this run's threads
            classifiers.single_threaded(trained.estimator)
            classify.decide.rows = stack.enter_context(classifiers.ParallelDecisions(classify.decide.rows))
        with raster_outputs(rasters) as out:

            def write_tile(tile, result):
                classes, scores = result
                out.writers[0].write(classes, 1, window=tile.to_rasterio())
                if confidence:
                    out.writers[1].write(scores, 1, window=tile.to_rasterio())

            skipped = executor.run(work, plan_tiles, write_tile, progress, classify)
            style = write_class_style(output, trained.classes, out.staged)
            if confidence:
                write_confidence_style(confidence, out.staged)
    return ClassifyResult(Path(output), Path(confidence) if confidence else None, style, len(plan_tiles), skipped)
