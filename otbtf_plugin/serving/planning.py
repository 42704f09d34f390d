"""Serving's plan: every geometry decision, resolved and checked against the model before any
pixel is read (the model runs once or twice on zeros to measure itself): which input each
source feeds, receptive and expression fields, spacing scale, the mode (pixels, blocks,
regions), each source's windows, the output grid, tile and batch sizes within the memory
budget."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..grid import AxisMap, Grid, GridError, Mode, ModelGeometry, SourceAxis, output_range
from ..models.loading import ModelError, ServedModel
from ..models.metadata import BandStatistics, ModelMetadata
from ..raster import grid_of, nodata_values
from .options import ServeOptions, ServeSource

PROBE_SIZES = (96, 128)  # input sizes used to measure a fully-convolutional model


@dataclass
class SourcePlan:
    path: Path
    name: str  # model input
    bands: int
    rfield: int  # source pixels
    efield: int  # source pixels per output block (blocks / regions)
    x: SourceAxis  # output index -> this source's pixels
    y: SourceAxis
    grid: Grid
    nodata: list
    normalisation: tuple | None  # (mean, std) arrays per band
    dtype: str  # the model input's dtype


@dataclass
class OutputPlan:
    name: str
    channels: int
    crop: int  # output pixels to skip at the start of each region result (regions mode)
    dtype: str


@dataclass(frozen=True)
class ClassFromScores:
    """With test-time augmentation a class output is the class of the mean scores: output
    ``output`` is ``served_model.classes_of_scores(mean of scores, codes, threshold)``."""

    output: str
    scores: str
    codes: tuple[int, ...]
    threshold: float | None = None  # scores below it count as 0 (Deepness' rule)


@dataclass
class Plan:
    mode: Mode
    geometry: ModelGeometry  # in reference pixels
    sources: list[SourcePlan]
    outputs: list[OutputPlan]
    grid: Grid  # output grid
    first: tuple[int, int]  # output index (col, row) of the output grid's pixel 0
    phase: int  # output index i covers reference pixels phase + i * scale .. + scale - 1
    tile: int
    batch: int
    feeds: dict[str, np.ndarray]  # user placeholders, ready to feed
    background: float
    pad: bool
    notes: list[str] = field(default_factory=list)  # what the user should know (sizes lowered to the budget)
    other_outputs: list[str] = field(default_factory=list)  # the model's outputs not served
    tta: bool = False  # test-time augmentation: mean over the 8 flips / 90-degree rotations
    class_from_scores: ClassFromScores | None = None  # with TTA: the class output, from the mean scores
    overlap: int = 0  # output pixels each tile is grown by and blended over (regions mode)

    @property
    def bands(self) -> int:
        return sum(o.channels for o in self.outputs)

    def describe(self) -> str:
        g = self.geometry
        served = ", ".join(f"{o.name} ({o.channels} band{'s' if o.channels > 1 else ''})" for o in self.outputs)
        others = f"; also available (OUTPUT_NAMES): {', '.join(self.other_outputs)}" if self.other_outputs else ""
        return (
            f"{self.mode} mode, receptive field {g.rfield} px, expression field {g.efield} px, scale {g.scale}; "
            f"output {self.grid.width} x {self.grid.height} px, tiles of {self.tile} px"
            + (f" grown by {self.overlap} px and blended" if self.overlap else "")
            + f"; serving {served}{others}"
        )


def _feed_value(model: ServedModel, name: str, value) -> np.ndarray:
    info = model.input(name)
    array = np.asarray(value, dtype=info.dtype)
    rank = len(info.shape)
    if array.ndim < rank and info.shape and info.shape[0] is None:  # scalar/vector: add the batch dimension
        array = array.reshape((1,) * (rank - array.ndim) + array.shape)
    return array


def _static_square(info, what: str) -> int | None:
    if len(info.shape) != 4:
        raise ModelError(
            f"model input {info.describe()} is not an image input [batch, rows, cols, bands] "
            f"({what}); give it as a user placeholder if it is a scalar or vector"
        )
    h, w = info.shape[1], info.shape[2]
    if h is None or w is None:
        return None
    if h != w:
        raise ModelError(
            f"model input {info.describe()} is not square ({h} x {w}); non-square receptive fields are not supported"
        )
    return int(h)


def _normalisation(statistics: BandStatistics | None, bands: int) -> tuple | None:
    if statistics is None:
        return None
    mean = np.asarray(statistics.mean, dtype=np.float32).reshape(-1)
    std = np.asarray(statistics.std, dtype=np.float32).reshape(-1)
    if len(mean) != bands or len(std) != bands:
        raise ModelError(f"the model's normalisation has {len(mean)} bands, the source {bands}")
    return mean, np.where(std == 0, 1, std)


def plan_serving(sources: list[ServeSource], model: ServedModel, options: ServeOptions, datasets: list) -> Plan:
    """Resolve and check the geometry of a serving run (no pixel is read): which model input
    each source feeds, the receptive fields, then the model kind's own measurement (fixed
    input sizes: patches or blocks; any size: regions), the sources' plans and the output grid."""
    meta = model.metadata or ModelMetadata()
    feeds = {name: _feed_value(model, name, value) for name, value in options.user_placeholders.items()}
    names = _bind_inputs(sources, model, feeds, meta)
    band_notes: list[str] = []
    bands = _source_bands(names, datasets, model, meta, band_notes)
    static = [_static_square(model.input(n), f"fed by source {k + 1}") for k, n in enumerate(names)]
    rfields = []
    for k, (src, name) in enumerate(zip(sources, names, strict=True)):
        given = meta.input(name)
        rfields.append(src.rfield or (given.rfield if given else None) or static[k] or 0)
    output_names = _output_names(options, model, meta)
    _check_one_input_fits(
        options.memory_mb,
        rfields,
        bands,
        model.fixed_batch() or 1,
        "RFIELD as given" if any(src.rfield for src in sources) else "read from the model",
    )
    probe = _Probe(model, feeds, names, bands)
    said = _Said(tuple(bool(src.rfield) for src in sources), bool(options.efield), bool(options.scale))
    if all(s is not None for s in static) or not options.fully_conv:
        measured = _measure_fixed_size(
            probe,
            rfields,
            static,
            output_names,
            options.efield or meta.efield or 0,
            options.scale or meta.scale or 0,
            said,
        )
    else:
        ratio_x = [grid_of(datasets[0]).res_x / grid_of(ds).res_x for ds in datasets]
        measured = _measure_any_size(
            probe,
            rfields,
            ratio_x,
            output_names,
            options.efield or meta.efield or 0,
            options.scale or meta.scale or 0,
            said,
        )
    try:
        geometry = ModelGeometry(measured.rfields[0], measured.efield, measured.scale)
    except GridError as err:
        raise ModelError(str(err)) from err
    phase = geometry.before % geometry.scale
    source_plans = _source_plans(sources, names, datasets, bands, model, meta, measured, phase)
    outputs = [
        OutputPlan(n, int(measured.channels[n]), measured.crop[n], np.asarray(measured.result[n]).dtype.name)
        for n in output_names
    ]
    reference = grid_of(datasets[0])
    # A Deepness model covers the whole raster, its edges padded with zeros (Deepness does so)
    pad = options.pad or meta.covers_raster
    if pad and not options.pad:
        band_notes.append(
            "the whole raster is covered, its edges padded (nodata, else 0), as the model's "
            "metadata asks (Deepness serves so)"
        )
    out_grid, first = _output_grid(geometry, phase, source_plans, reference, measured.mode, pad)
    tile, batch, notes = _sizes(options, geometry, source_plans, outputs, measured.mode)
    overlap = _overlap(options, measured.mode, outputs)
    if overlap:
        tile = _blended_tile(options, tile, overlap, out_grid.width, sum(o.channels for o in outputs), notes)
    elif options.overlap:
        notes.append(
            f"OVERLAP {options.overlap}: a {measured.mode} model answers for each "
            f"{'patch' if measured.mode == 'pixels' else 'block'} alone, whatever the tiles: "
            "nothing to blend"
        )
    others = [t.name for t in model.outputs if t.name not in output_names]
    return Plan(
        mode=measured.mode,
        geometry=geometry,
        sources=source_plans,
        outputs=outputs,
        grid=out_grid,
        first=first,
        phase=phase,
        tile=tile,
        batch=batch,
        feeds=feeds,
        background=float(options.background),
        pad=pad,
        notes=band_notes + notes,
        other_outputs=others,
        tta=options.tta,
        class_from_scores=_class_from_scores(options, model, meta, outputs),
        overlap=overlap,
    )


def _check_one_input_fits(memory_mb: int, rfields: list[int], bands: list[int], batch: int, origin: str) -> None:
    """Refuse, before the model is first run, a model whose single input (at its fixed batch
    size) cannot fit MEMORY_MB with room for its work (x 8): a size read from a file (Deepness'
    tile_size, a fixed input shape) must not exhaust the machine."""
    need_bytes = 8 * batch * sum(r * r * b * 4 for r, b in zip(rfields, bands, strict=True))
    if need_bytes <= max(32, memory_mb) * 2**20:
        return
    need = -(-need_bytes // 2**20)
    inputs = ", ".join(f"{r} x {r} px x {b} band(s)" for r, b in zip(rfields, bands, strict=True))
    raise InputError(
        f"the model takes inputs of {inputs}{f' in batches of {batch}' if batch > 1 else ''} ({origin}), "
        f"which need about {need} MiB with the model's working memory, more than MEMORY_MB "
        f"{memory_mb}: raise MEMORY_MB to at least {need}, or use a model that takes smaller tiles"
    )


def _bind_inputs(sources: list[ServeSource], model: ServedModel, feeds: dict, meta: ModelMetadata) -> list[str]:
    """The model input each source feeds: its PLACEHOLDERn, else the image inputs in order
    (the metadata's order first); every image input must be fed."""
    image_inputs = [t.name for t in model.inputs if t.name not in feeds]
    if meta.inputs:
        declared = [i.name for i in meta.inputs]
        image_inputs = [n for n in declared if n in image_inputs] + [n for n in image_inputs if n not in declared]
    names = []
    for k, src in enumerate(sources):
        if src.placeholder:
            model.input(src.placeholder)
            names.append(src.placeholder)
        elif k < len(image_inputs):
            names.append(image_inputs[k])
    missing = [n for n in image_inputs if n not in names]
    if len(names) != len(sources) or missing:
        described = ", ".join(model.input(n).describe() for n in image_inputs)
        raise ModelError(
            f"the model has {len(image_inputs)} image input(s) ({described}) and {len(sources)} source(s) were given"
            + (
                f"; nothing feeds {', '.join(missing)}: add a source (PLACEHOLDERn) or a user placeholder"
                if missing
                else ""
            )
        )
    return names


def _source_bands(names: list[str], datasets, model: ServedModel, meta: ModelMetadata, notes: list[str]) -> list[int]:
    """The bands each source gives its input: all of them, or (a model whose metadata says
    ``first_bands``: Deepness', which takes the RGB of an RGBA image) the first ones."""
    used = []
    for k, (name, ds) in enumerate(zip(names, datasets, strict=True)):
        shape = model.input(name).shape
        want = shape[3] if len(shape) == 4 else None  # not an image: said by _static_square
        if want is not None and want < ds.count and meta.first_bands:
            notes.append(
                f"source {k + 1} has {ds.count} bands and the model takes {want}: bands 1 to {want} "
                "are used, as the model's metadata asks (Deepness does so)"
            )
        elif want is not None and want != ds.count:
            raise ModelError(
                f"source {k + 1} has {ds.count} band(s); model input {model.input(name).describe()} expects {want}"
            )
        used.append(want or ds.count)
    return used


def _output_names(options: ServeOptions, model: ServedModel, meta: ModelMetadata) -> list[str]:
    """OUTPUT_NAMES, else the outputs the model folder serves by default (a classifier of ours:
    its class map), else the model's outputs without its extras (served only when named)."""
    extras = set(meta.extra_outputs)  # e.g. "features"
    own = {t.name for t in model.outputs}
    defaults = [n for n in meta.default_outputs if n in own]
    names = (
        options.output_names
        or defaults
        or [t.name for t in model.outputs if t.name not in extras]
        or [t.name for t in model.outputs]
    )
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ModelError(
            f"OUTPUT_NAMES names {', '.join(repr(n) for n in twice)} more than once: give each output once"
        )
    for name in names:
        model.output(name)
    return names


class _Probe:
    """Runs the model once on zeros of given input sizes (no pixel read), errors in plain words."""

    def __init__(self, model: ServedModel, feeds: dict, names: list[str], bands: list[int]):
        self.model, self.feeds, self.names, self.bands = model, feeds, names, bands

    def __call__(self, sizes: list[int]) -> dict:
        zeros = {
            n: np.zeros((1, s, s, b), dtype=self.model.input(n).dtype)
            for n, s, b in zip(self.names, sizes, self.bands, strict=True)
        }
        try:
            return self.model.run({**self.feeds, **zeros})
        except Exception as err:  # any TensorFlow error: say it in plain words
            raise ModelError(
                f"the model could not run on inputs of {' / '.join(f'{s} x {s}' for s in sizes)} px "
                f"({_first_line(err)})"
            ) from err


@dataclass
class _Measured:
    """What measuring the model gave: its mode and geometry, per output its crop and channels,
    and one result of the model (for the outputs' types)."""

    mode: Mode
    rfields: list[int]
    efield: int
    scale: int
    crop: dict[str, int]
    channels: dict[str, int]
    result: dict


@dataclass(frozen=True)
class _Said:
    """Which sizes the user typed (RFIELDn, EFIELD, SPCSCALE) and which came from the model's
    metadata: a message quotes the user's words only for what the user typed."""

    rfield_typed: tuple[bool, ...]
    efield_typed: bool
    scale_typed: bool

    def rfield(self, k: int, value: int) -> str:
        return (
            f"RFIELD{k + 1}={value}"
            if self.rfield_typed[k]
            else f"the receptive field of {value} px in the model's metadata"
        )

    def efield(self, value: int) -> str:
        return f"EFIELD={value}" if self.efield_typed else f"the expression field of {value} px in the model's metadata"

    def scale(self, value: int) -> str:
        return f"SPCSCALE={value}" if self.scale_typed else f"the spacing scale {value} in the model's metadata"


def _measure_fixed_size(
    probe: _Probe, rfields: list[int], static: list, output_names: list[str], efield: int, scale: int, said: _Said
) -> _Measured:
    """Pixels or blocks: one fixed input size per source; the output size of one patch is the
    expression field."""
    if any(r == 0 for r in rfields):
        k = rfields.index(0)
        raise ModelError(
            f"the receptive field of source {k + 1} is unknown (model input "
            f"{probe.model.input(probe.names[k]).describe()} has no fixed size and no metadata); "
            f"give RFIELD{k + 1}, the patch size the model was trained on"
        )
    for k, (r, s) in enumerate(zip(rfields, static, strict=True)):
        if s is not None and r != s:
            raise ModelError(
                f"{said.rfield(k, r)} but model input {probe.names[k]} takes {s} x {s} px: "
                f"use RFIELD{k + 1}={s} (or 0, from the model)"
            )
    result = probe(rfields)
    sizes = {}
    for name in output_names:
        shape = np.asarray(result[name]).shape
        if (
            len(shape) in (1, 2)
            or (len(shape) == 4 and shape[1] == shape[2] == 1)
            or (len(shape) == 3 and shape[1] == shape[2] == 1)
        ):
            sizes[name] = 1
        elif len(shape) in (3, 4) and shape[1] == shape[2]:
            sizes[name] = shape[1]
        else:
            raise ModelError(
                f"output {name} has shape {shape} for one input patch; expected [n], [n, c], "
                "[n, y, x] or [n, y, x, c] with y = x"
            )
    distinct = set(sizes.values())
    if len(distinct) != 1:
        raise ModelError(
            "the outputs do not cover the same area ("
            + ", ".join(f"{n}: {s} x {s} px" for n, s in sizes.items())
            + "); serve them in separate runs (OUTPUT_NAMES)"
        )
    measured = distinct.pop()
    if efield and efield != measured:
        raise ModelError(_maps_message(rfields[0], measured, said.efield(efield)))
    channels = {
        n: (1 if np.asarray(result[n]).ndim in (1, 3) else np.asarray(result[n]).shape[-1]) for n in output_names
    }
    # a fixed-size model cannot tell its scale: the user or metadata does
    return _Measured(
        "pixels" if measured == 1 else "blocks",
        rfields,
        measured,
        scale or 1,
        dict.fromkeys(output_names, 0),
        channels,
        result,
    )


def _measure_any_size(  # noqa: C901
    probe: _Probe,
    rfields: list[int],
    ratio_x: list[float],
    output_names: list[str],
    efield: int,
    scale: int,
    said: _Said,
) -> _Measured:
    """Regions (fully-convolutional): context and spacing scale measured by running the model
    on two input sizes; each output's crop aligns its first pixel with the others'."""
    if len(rfields) > 1 and any(r == 0 for r in rfields):
        raise ModelError(
            "fully-convolutional serving of several sources needs every RFIELDn (or a model with metadata)"
        )
    n1, n2 = PROBE_SIZES
    out1 = probe([max(1, round(n1 * abs(r))) for r in ratio_x])
    out2 = probe([max(1, round(n2 * abs(r))) for r in ratio_x])
    contexts, scales = {}, {}
    for name in output_names:
        m1, m2 = np.asarray(out1[name]).shape, np.asarray(out2[name]).shape
        if len(m1) not in (3, 4):
            raise ModelError(
                f"output {name} has shape {m1}: not an image; fully-convolutional serving "
                "needs [n, y, x] or [n, y, x, c] outputs (use FULLYCONV=false for a patch "
                "classifier)"
            )
        if m2[1] == m1[1]:
            raise ModelError(
                f"output {name} keeps the size {m1[1]} px whatever the input size: not "
                "fully-convolutional; use FULLYCONV=false"
            )
        step = (n2 - n1) / (m2[1] - m1[1])
        if step != int(step) or step < 1:
            raise ModelError(
                f"output {name}: {n1} px -> {m1[1]} px and {n2} px -> {m2[1]} px; the spacing "
                "scale is not a whole number"
            )
        scales[name] = int(step)
        contexts[name] = n1 - m1[1] * int(step)
    if len(set(scales.values())) != 1:
        raise ModelError(
            "the outputs have different spacing scales ("
            + ", ".join(f"{n}: {s}" for n, s in scales.items())
            + "); serve them separately"
        )
    measured_scale = scales[output_names[0]]
    if scale and scale != measured_scale:
        m1_px = np.asarray(out1[output_names[0]]).shape[1]
        raise ModelError(
            f"{said.scale(scale)} but this model maps {n1} px to {m1_px} px, a spacing scale of "
            f"{measured_scale}: use SPCSCALE={measured_scale} (or 0)"
        )
    scale = measured_scale
    context = max(contexts.values())
    if rfields[0] and efield and rfields[0] - efield * scale != contexts[output_names[0]]:
        expected_ef = (rfields[0] - contexts[output_names[0]]) // scale
        raise ModelError(_maps_message(rfields[0], expected_ef, said.efield(efield)))
    if rfields[0] and not efield:
        efield = (rfields[0] - context) // scale
        if efield < 1:
            raise ModelError(
                f"{said.rfield(0, rfields[0])} is smaller than the model's context ({context} px); "
                f"use RFIELD1 of at least {context + scale}"
            )
    efield = efield or 64  # a declared block, for the centring rule only
    # Each output's first pixel, counted from the most cropped one (centres coincide).
    befores = {n: (efield * scale + c) // 2 - (efield * scale) // 2 for n, c in contexts.items()}
    top = max(befores.values())
    crop = {}
    for name in output_names:
        offset = top - befores[name]
        if offset % scale:
            raise ModelError(f"output {name} is not aligned with the others on the output grid")
        crop[name] = offset // scale
    channels = {n: (1 if np.asarray(out1[n]).ndim == 3 else np.asarray(out1[n]).shape[-1]) for n in output_names}
    return _Measured(
        "regions", [rfields[0] or efield * scale + context, *rfields[1:]], efield, scale, crop, channels, out1
    )


def _source_plans(
    sources: list[ServeSource],
    names: list[str],
    datasets,
    bands: list[int],
    model: ServedModel,
    meta: ModelMetadata,
    measured: _Measured,
    phase: int,
) -> list[SourcePlan]:
    """Each source's plan: its axes against the reference, its share of an output block."""
    reference = grid_of(datasets[0])
    plans = []
    for k, (src, name, ds, count) in enumerate(zip(sources, names, datasets, bands, strict=True)):
        grid = grid_of(ds)
        x = AxisMap.between(reference.x0, reference.res_x, grid.x0, grid.res_x)
        y = AxisMap.between(reference.y0, reference.res_y, grid.y0, grid.res_y)
        source_efield = measured.efield * measured.scale * x.ratio
        if measured.mode != "pixels" and abs(source_efield - round(source_efield)) > 1e-6:
            raise ModelError(
                f"source {k + 1}: an output block of {measured.efield * measured.scale} reference px "
                f"is {source_efield:g} of its pixels; use an expression field that makes it whole"
            )
        given = meta.input(name)
        rfield, efield = int(measured.rfields[k]), round(source_efield) if measured.mode != "pixels" else 1
        plans.append(
            SourcePlan(
                Path(src.path),
                name,
                count,
                rfield,
                efield,
                SourceAxis(x, phase, measured.scale, rfield, efield),
                SourceAxis(y, phase, measured.scale, rfield, efield),
                grid,
                nodata_values(ds, src.nodata)[:count],
                _normalisation(given.normalisation if given else None, count),
                model.input(name).dtype,
            )
        )
    if measured.mode == "regions":
        for k, sp in enumerate(plans[1:], 2):
            if not sp.rfield:
                raise ModelError(f"give RFIELD{k} for fully-convolutional serving")
    return plans


def _output_grid(
    geometry: ModelGeometry, phase: int, source_plans: list[SourcePlan], reference: Grid, mode: Mode, pad: bool
) -> tuple[Grid, tuple[int, int]]:
    """The output grid: the reference grid cropped by the receptive field (or padded),
    sampled every ``scale`` pixels; the first output pixel whose input fits starts its input
    at pixel 0. Also the output index of its first pixel."""
    scale = geometry.scale
    col, width = output_range(reference.width, phase, scale, [(sp.x, sp.grid.width) for sp in source_plans], mode, pad)
    row, height = output_range(
        reference.height, phase, scale, [(sp.y, sp.grid.height) for sp in source_plans], mode, pad
    )
    if mode == "blocks" and not pad:
        # A block's every pixel depends on its whole input: keep whole blocks only.
        width, height = width // geometry.efield * geometry.efield, height // geometry.efield * geometry.efield
    if width <= 0 or height <= 0:
        raise InputError(_no_room_message(geometry, source_plans, reference))
    return reference.coarser(phase + col * scale, phase + row * scale, scale, width, height), (col, row)


def _class_from_scores(
    options: ServeOptions, model: ServedModel, meta: ModelMetadata, outputs: list[OutputPlan]
) -> ClassFromScores | None:
    """Test-time augmentation averages outputs; a class output cannot be averaged: it is taken
    from the mean of the scores it comes from (a classifier of ours: ``prob``; a Deepness
    segmentor: its scores), else refused."""
    if not options.tta:
        return None
    derived = None
    scores = meta.scores_output or "prob"
    for o in outputs:
        if np.issubdtype(np.dtype(o.dtype), np.floating):
            continue
        has_scores = any(t.name == scores for t in model.outputs)
        if o.name != "class" or not meta.classes or not has_scores:
            raise ModelError(
                f"TTA averages the outputs over 8 flips and rotations, and output {o.name} holds "
                f"{o.dtype} values (classes?), which cannot be averaged: serve the model's scores "
                f"with TTA, or {o.name} without it"
            )
        derived = ClassFromScores(o.name, scores, tuple(c.code for c in meta.classes), meta.class_threshold)
    return derived


def _overlap(options: ServeOptions, mode: str, outputs: list[OutputPlan]) -> int:
    """The blending margin: OVERLAP in regions mode (patch and block models do not depend on
    the tiles); integer outputs (classes) cannot be blended."""
    if options.overlap < 0:
        raise InputError(f"OVERLAP={options.overlap}: give a number of output pixels, 0 or more")
    if not options.overlap or mode != "regions":
        return 0
    for o in outputs:
        if not np.issubdtype(np.dtype(o.dtype), np.floating):
            raise ModelError(
                f"OVERLAP blends neighbouring tiles, and output {o.name} holds {o.dtype} values "
                "(classes?), which cannot be blended: serve the model's scores with OVERLAP"
            )
    return options.overlap


def _blended_tile(options: ServeOptions, tile: int, overlap: int, width: int, bands: int, notes: list[str]) -> int:
    """Tiles grown by ``overlap`` on each side: the grown tile must fit where the tile did, the
    tiles waiting for their lower neighbours (about a row: ``width`` x tile px of sums and
    weights, 8 bytes each) take at most a quarter of the budget, and a tile is at least
    2 x ``overlap`` wide, so that a grown tile reaches only its neighbours."""
    budget = max(32, options.memory_mb) * 2**20
    row_cap = (budget // 4) // max(1, width * (bands + 1) * 8)
    fitted = max(2 * overlap, min(tile if options.tile_px else tile - 2 * overlap, row_cap))
    if options.tile_px and fitted < options.tile_px:
        notes.append(
            f"TILE_SIZE {options.tile_px} with OVERLAP {overlap}: using {fitted} px so that the grown "
            f"tiles and those waiting to be blended fit MEMORY_MB {options.memory_mb}"
        )
    return int(fitted)


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def _maps_message(rfield: int, measured_efield: int, efield_given: str) -> str:
    return (
        f"{efield_given} does not fit this model: it maps {rfield} x {rfield} px to "
        f"{measured_efield} x {measured_efield} px; use RFIELD1={rfield}, EFIELD={measured_efield}"
    )


def _no_room_message(geometry, sources, reference) -> str:
    parts = [
        f"no output pixel has its whole receptive field inside the sources (receptive field "
        f"{geometry.rfield} px of source 1, which is {reference.width} x {reference.height} px)"
    ]
    for k, sp in enumerate(sources, 1):
        xmin, ymin, xmax, ymax = sp.grid.bounds
        parts.append(f"source {k} covers x {xmin:.2f} .. {xmax:.2f}, y {ymin:.2f} .. {ymax:.2f}")
    parts.append("use smaller patches, check that the sources overlap, or pad the output (PAD)")
    return "; ".join(parts)


def _sizes(options, geometry, sources, outputs, mode) -> tuple[int, int, list[str]]:
    """Tile size (output px) and batch size (patches per model call) that fit the memory
    budget, and notes for the log. Sizes typed by the user are kept unless they would pass
    the budget: then they are lowered to what fits, and a note says so."""
    budget = max(32, options.memory_mb) * 2**20
    per_patch = max(1, sum(sp.rfield**2 * sp.bands * 4 for sp in sources))
    max_batch = max(1, budget // (8 * per_patch))  # a batch's input with room for the model's work
    if mode == "pixels":
        # a tile's patches are gathered ahead (up to 3 tiles in flight): a third of the budget
        max_tile = max(1, math.isqrt(budget // (9 * per_patch)))
        # batches of up to 8192 patches: measured 14 % faster than 4096 for a small patch model
        auto_tile, auto_batch = int(np.clip(max_tile // 32 * 32, 32, 256)), int(np.clip(max_batch, 16, 8192))
    elif mode == "blocks":
        max_tile = geometry.efield * max(1, math.isqrt(budget // (9 * per_patch)))
        auto_tile = max(geometry.efield, (256 // geometry.efield) * geometry.efield)
        auto_batch = int(np.clip(max_batch, 4, 1024))
    else:
        # input of all sources + outputs + room for the model's activations (x 16)
        per_px = sum(sp.bands * 4 * (geometry.scale * sp.x.ratio) ** 2 for sp in sources) + sum(
            o.channels * 4 for o in outputs
        )
        max_tile = max(1, math.isqrt(int(budget / (16 * max(per_px, 1)))))
        auto_tile, auto_batch = int(np.clip(max_tile // 64 * 64, 64, 1024)), 1
    notes = []
    tile, batch = options.tile_px or auto_tile, options.batch_size or auto_batch
    if tile > max(max_tile, auto_tile):
        tile = max(max_tile, auto_tile)
        notes.append(
            f"TILE_SIZE {options.tile_px} would pass the memory budget (MEMORY_MB {options.memory_mb}): "
            f"using {tile} px; raise MEMORY_MB for larger tiles"
        )
    if mode != "regions" and batch > max(max_batch, auto_batch):
        batch = max(max_batch, auto_batch)
        notes.append(
            f"BATCH_SIZE {options.batch_size} would pass the memory budget (MEMORY_MB "
            f"{options.memory_mb}): using {batch}; raise MEMORY_MB for larger batches"
        )
    if mode == "pixels" and not options.batch_size:  # equal batches: no small last batch per tile (6 % faster)
        per_tile = tile * tile
        batch = math.ceil(per_tile / math.ceil(per_tile / batch))
    if mode == "regions":
        batch = 1
    if mode == "blocks" and tile % geometry.efield:
        tile = max(geometry.efield, tile // geometry.efield * geometry.efield)
    return int(tile), int(batch), notes
