"""Features of pixels for classical classifiers: the outputs of a model served
by the tiled engine, or the bands of the sources themselves.

The features of a pixel are what serving writes at that pixel in "pixels" mode:
the model applied to the receptive field of every source centred on it. Training
samples go through the same reads and model calls as image classification (a
one-pixel tile each), so a classifier sees the same numbers in both.

Without a model, a built-in stand-in "model" takes a 1 x 1 patch of every source
and concatenates the bands: sources at other resolutions give the value of the
pixel that contains the reference pixel's centre, as in patch extraction.

A *recipe* records how features were made (model identity and outputs, bands and
receptive field of every source); a classifier keeps the recipe of its training
features, and classification refuses sources or models that differ.
"""

from __future__ import annotations

import hashlib
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path

import numpy as np

from .errors import InputError
from .grid import Window
from .models.devices import Device
from .models.loading import ServedModel, TensorInfo, load_model
from .progress import NullProgress, Progress, check_cancelled
from .raster import close_with, open_raster
from .serving.inference import tile_input
from .serving.options import ServeOptions, ServeSource
from .serving.output import band_names
from .serving.planning import Plan, plan_serving

BANDS_MODEL = "source bands"


@dataclass
class FeatureSource:
    path: str | Path
    rfield: int = 0  # receptive field in this source's pixels (0: from the model; 1 without a model)
    nodata: float | None = None


@dataclass
class FeatureSpec:
    """How features are made: sources, and optionally a model and its outputs."""

    sources: list[FeatureSource]
    model: str | Path | None = None  # None or "": the bands of the sources
    output_names: list[str] = field(default_factory=list)
    allow_lambda: bool = False
    memory_mb: int = 512
    device: Device = "auto"  # where the model runs (models.devices)

    def input_paths(self) -> dict[str, str | Path | None]:
        """The files read, by parameter name (for :func:`outputs.check_paths`)."""
        return {**{f"SOURCE{n}": s.path for n, s in enumerate(self.sources, 1)}, "MODEL": self.model or None}


def bands_model(datasets) -> ServedModel:
    """The stand-in model of raw-band features: 1 x 1 patches in, bands concatenated out."""
    inputs = [TensorInfo(f"source{k}", "float32", (None, 1, 1, ds.count)) for k, ds in enumerate(datasets, 1)]
    total = sum(ds.count for ds in datasets)

    def call(feeds):
        parts = [np.asarray(feeds[t.name], dtype=np.float32) for t in inputs]
        n = len(parts[0])
        return {"bands": np.concatenate([p.reshape(n, -1) for p in parts], axis=1)}

    return ServedModel(Path(BANDS_MODEL), "bands", inputs, [TensorInfo("bands", "float32", (None, total))], None, call)


def model_digest(path: str | Path) -> str:
    """SHA-256 of a model file, or of every file of a model folder (names and bytes)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for item in files:
        digest.update(str(item.relative_to(path) if path.is_dir() else item.name).encode())
        with open(item, "rb") as handle:
            for chunk in iter(partial(handle.read, 1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class OpenFeatures:
    """Sources open, model loaded, geometry planned: ready to compute features."""

    spec: FeatureSpec
    datasets: list
    model: ServedModel
    plan: Plan

    @cached_property
    def recipe(self) -> dict:
        """How the features are made (hashes the model's files: computed when asked)."""
        return recipe_of(self.spec, self.model, self.plan, self.datasets)

    @property
    def count(self) -> int:
        return self.plan.bands

    def values_at(
        self, x: np.ndarray, y: np.ndarray, progress: Progress | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Features of the pixels containing map points (in source 1's CRS):
        ``(values (n, features) float32, ok (n,) bool, rejected reason -> count)``."""
        progress = progress or NullProgress()
        plan = self.plan
        n = len(x)
        values = np.zeros((n, self.count), dtype=np.float32)
        ok = np.zeros(n, dtype=bool)
        rejected: dict[str, int] = {}
        col, row = plan.grid.pixel_of(np.asarray(x, float), np.asarray(y, float))
        col, row = np.atleast_1d(col), np.atleast_1d(row)
        inside = (col >= 0) & (row >= 0) & (col < plan.grid.width) & (row < plan.grid.height)
        if (~inside).any():
            rejected["receptive field not entirely inside the sources"] = int((~inside).sum())
        candidates = np.flatnonzero(inside)
        step = max(1, plan.batch)
        for first in range(0, len(candidates), step):
            check_cancelled(progress, "feature extraction")
            chunk, feeds, members = candidates[first : first + step], [], []
            for k in chunk:
                item = tile_input(plan, self.datasets, Window(int(col[k]), int(row[k]), 1, 1))
                if item.arrays is None or item.background is not None or not item.batches:
                    rejected["nodata"] = rejected.get("nodata", 0) + 1
                    continue
                feeds.append(item.batches[0])
                members.append(k)
            if members:
                batch = dict(plan.feeds)
                for sp in plan.sources:
                    batch[sp.name] = np.concatenate([f[sp.name] for f in feeds])
                result = self.model.run(batch)
                parts = [np.asarray(result[o.name]).reshape(len(members), -1) for o in plan.outputs]
                values[members] = np.concatenate(parts, axis=1)
                ok[members] = True
            progress.step(min(first + step, len(candidates)), len(candidates))
        return values, ok, rejected


def open_features(spec: FeatureSpec, stack: ExitStack) -> OpenFeatures:
    """Open the sources and the model (closed with ``stack``) and plan the feature geometry."""
    if not spec.sources:
        raise InputError("no source raster given")
    datasets = [close_with(stack, open_raster(s.path)) for s in spec.sources]
    if spec.model:
        model = load_model(spec.model, allow_lambda=spec.allow_lambda, device=spec.device)
        sources = [ServeSource(s.path, s.rfield, "", s.nodata) for s in spec.sources]
        names = spec.output_names
    else:
        if spec.output_names:
            raise InputError("OUTPUT_NAMES needs a MODEL: without one, the features are the bands of the sources")
        for k, s in enumerate(spec.sources, 1):
            if s.rfield not in (0, 1):
                raise InputError(
                    f"RFIELD{k}={s.rfield}: without a model the features are the bands of one pixel; "
                    "use RFIELD 1 (or 0)"
                )
        model = bands_model(datasets)
        sources = [ServeSource(s.path, 1, "", s.nodata) for s in spec.sources]
        names = []
    options = ServeOptions(output_names=list(names), memory_mb=spec.memory_mb, allow_lambda=spec.allow_lambda)
    plan = plan_serving(sources, model, options, datasets)
    if plan.mode != "pixels":
        raise InputError(
            f"the outputs {', '.join(o.name for o in plan.outputs)} of this model are "
            f"{plan.geometry.efield} x {plan.geometry.efield} px per receptive field: features need "
            "one value per pixel; choose an output of 1 x 1 px per patch (OUTPUT_NAMES), e.g. a "
            "dense layer or the global pooling of the network"
        )
    return OpenFeatures(spec, datasets, model, plan)


def recipe_of(spec: FeatureSpec, model: ServedModel, plan: Plan, datasets) -> dict:
    return {
        "model": None
        if model.kind == "bands" or not spec.model
        else {
            "name": Path(spec.model).name,
            "digest": model_digest(spec.model),
        },
        "output_names": [o.name for o in plan.outputs] if model.kind != "bands" else [],
        "sources": [
            {
                "bands": sp.bands,
                "rfield": sp.rfield,
                "dtype": str(ds.dtypes[0]),
                "name": Path(ds.name).name,
                "resolution": [abs(ds.transform.a), abs(ds.transform.e)],
            }
            for sp, ds in zip(plan.sources, datasets, strict=True)
        ],
        "features": band_names(plan, "{name}_{c}")
        if model.kind != "bands"
        else [f"source{k}_band{b}" for k, sp in enumerate(plan.sources, 1) for b in range(1, sp.bands + 1)],
    }


def recipe_differences(trained: dict, given: dict) -> list[str]:
    """What differs between the recipe a classifier was trained with and the inputs given now."""
    out = []
    if (trained.get("model") or {}).get("digest") != (given.get("model") or {}).get("digest"):

        def name(r):
            return f"model {r['model']['name']!r}" if r.get("model") else "the bands of the sources (no model)"

        out.append(
            f"features came from {name(trained)} at training; now from {name(given)} "
            "(a different model, or the same one modified)"
        )
    if trained.get("output_names") != given.get("output_names") and not out:
        out.append(
            f"OUTPUT_NAMES were {', '.join(trained['output_names']) or '(all)'}; now "
            f"{', '.join(given['output_names']) or '(all)'}"
        )
    ts, gs = trained.get("sources", []), given.get("sources", [])
    if len(ts) != len(gs):
        out.append(f"{len(ts)} source(s) at training; {len(gs)} given")
    else:
        for k, (t, g) in enumerate(zip(ts, gs, strict=True), 1):
            if t["bands"] != g["bands"]:
                out.append(f"source {k} had {t['bands']} band(s) at training; the one given has {g['bands']}")
            if t["rfield"] != g["rfield"]:
                out.append(
                    f"source {k}: receptive field {t['rfield']} px at training; {g['rfield']} now: "
                    f"use RFIELD{k}={t['rfield']}"
                )
    swapped = _swapped_sources(ts, gs)
    if swapped:
        out.append(swapped)
    if not out and trained.get("features") != given.get("features"):
        out.append(f"{len(trained['features'])} features at training; {len(given['features'])} now")
    return out


def _resolution(source: dict) -> tuple[float, float] | None:
    resolution = source.get("resolution")  # older classifier files have none
    return (float(resolution[0]), float(resolution[1])) if resolution else None


def _same_resolution(a, b) -> bool:
    if a is None or b is None:
        return False
    return all(abs(p - q) <= 1e-6 * max(abs(p), abs(q)) for p, q in zip(a, b, strict=True))


def _swapped_sources(trained: list[dict], given: list[dict]) -> str | None:
    """Sources given in another order than at training (told apart by their resolutions)."""
    if len(trained) != len(given) or len(trained) < 2:
        return None
    was, now = [_resolution(t) for t in trained], [_resolution(g) for g in given]
    if any(r is None for r in was) or all(_same_resolution(a, b) for a, b in zip(was, now, strict=True)):
        return None
    order = []
    for resolution in now:
        match = [j for j, r in enumerate(was) if _same_resolution(r, resolution) and j not in order]
        if not match:
            return None  # other data altogether: said by recipe_notes
        order.append(match[0])
    described = ", ".join(
        f"SOURCE{j + 1} = the {_pixel_size(size)} raster ({source.get('name', '?')} at training)"
        for j, (size, source) in enumerate(zip(was, trained, strict=True))
    )
    given_order = ", ".join(f"source {k} is {_pixel_size(now[k - 1])}" for k in range(1, len(now) + 1))
    return f"the sources seem swapped ({given_order}): give them in the training order, {described}"


def _pixel_size(resolution) -> str:
    return f"{resolution[0]:g} x {resolution[1]:g}"


def recipe_notes(trained: dict, given: dict) -> list[str]:
    """Differences that may be intended (another scene of the same sensor) but are worth a line
    in the log: another resolution or pixel type than at training."""
    notes = []
    for k, (t, g) in enumerate(zip(trained.get("sources", []), given.get("sources", []), strict=False), 1):
        was, now = _resolution(t), _resolution(g)
        if was and now and not _same_resolution(was, now):
            notes.append(
                f"warning: source {k} has pixels of {_pixel_size(now)}; the classifier was trained on "
                f"{_pixel_size(was)} ({t.get('name', '?')}): check that this is the data you mean"
            )
        if t.get("dtype") and t["dtype"] != g.get("dtype"):
            notes.append(
                f"warning: source {k} holds {g.get('dtype')} pixels; the classifier was trained on "
                f"{t['dtype']} ({t.get('name', '?')}): values on another scale give a wrong map"
            )
    return notes
