"""Patches extraction: one patch per point and per source, into patches images.

For each point and each source, the patch is centred on the source pixel that
contains the point (docs/interface.md: ``c - P // 2 .. c - P // 2 + P - 1``), so
sources of different resolutions give patches of the same ground when their
patch sizes are in the ratio of their pixel sizes. A point is kept only if its
patch lies entirely inside every source and holds no nodata value of its
source (in any band); rejections are counted per reason.

Reads are grouped by raster block of the patch centres: each group is one
windowed read, whatever the number of points. Patches go to a temporary
array on disk beside the outputs, then to the patches images in point order.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.warp import transform_bounds

from .errors import InputError
from .grid import Grid, block_index, cut_patches, margins_px, patch_centre, patch_fits, patch_start, patches_window
from .outputs import GEOTIFF, RASTER_COMPANIONS, Output, StagedOutputs, check_paths, geotiff
from .patches_image import ORIGINS_SUFFIX, TAG_CLASS_CODES, PatchesWriter, origins_path, write_origins
from .progress import NullProgress, Progress, check_cancelled, mebibytes
from .raster import class_code_types, close_with, crs_wkt, grid_of, invalid_pixels, nodata_values, open_raster, read
from .scratch import scratch_dir
from .vector import Features, origins, read_features, transform_xy

GROUP_PX = 512  # patch centres are grouped by blocks of this many pixels for reading
WRITE_CHUNK = 256  # patches per write


@dataclass
class PatchSource:
    """A raster to cut patches from, with the patch size for it (pixels)."""

    path: str | Path
    patch_width: int
    patch_height: int | None = None
    nodata: float | None = None  # overrides the raster's own nodata value

    @property
    def height(self) -> int:
        return self.patch_height or self.patch_width


@dataclass
class Extraction:
    """What was extracted, and why the other points were not."""

    outputs: list[Path]
    labels: Path | None
    candidates: int
    accepted: int
    rejected: dict[str, int]
    fids: np.ndarray  # origin of the accepted points (their polygon, else the point), in patch order
    codes: np.ndarray
    x: np.ndarray  # accepted points, in the first source's CRS
    y: np.ndarray
    class_names: dict[int, str]
    string_classes: bool
    field: str
    crs_wkt: str | None
    messages: list[str] = dataclasses.field(default_factory=list)


def _describe_bounds(bounds) -> str:
    xmin, ymin, xmax, ymax = bounds
    return f"x {xmin:.2f} .. {xmax:.2f}, y {ymin:.2f} .. {ymax:.2f}"


def _check_overlap(datasets) -> None:
    """All sources must overlap (compared in the first source's CRS)."""
    reference = datasets[0]
    boxes = [reference.bounds]
    for ds in datasets[1:]:
        boxes.append(
            transform_bounds(ds.crs, reference.crs, *ds.bounds)
            if ds.crs and reference.crs and ds.crs != reference.crs
            else ds.bounds
        )
    xmin, ymin = max(b[0] for b in boxes), max(b[1] for b in boxes)
    xmax, ymax = min(b[2] for b in boxes), min(b[3] for b in boxes)
    if xmin >= xmax or ymin >= ymax:
        described = "; ".join(f"source {i} covers {_describe_bounds(b)}" for i, b in enumerate(boxes, 1))
        raise InputError(f"the sources do not overlap ({described}, in the CRS of source 1)")


BYTES_PER_POINT = 200  # measured peak growth, one source (tests/engine/test_extraction.py checks it)
MEMORY_SHARE = 0.5  # of the machine's memory, at most, for the points' working arrays


def physical_memory() -> int:
    """Bytes of memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def extract_patches(
    sources: list[PatchSource],
    vector,
    outputs: list[str | Path],
    field_name: str | None = None,
    labels_output: str | Path | None = None,
    layer: str | None = None,
    group_px: int = GROUP_PX,
    progress: Progress | None = None,
) -> Extraction:
    """Extract one patch per point and per source (see module doc)."""
    progress = progress or NullProgress()
    targets = _check_request(sources, vector, outputs, field_name, labels_output)
    with ExitStack() as stack:
        # Each window is read once: GDAL's block cache (5 % of the RAM by default) need not grow.
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=64))
        datasets = [close_with(stack, open_raster(s.path)) for s in sources]
        grids = _check_sources(sources, datasets)
        points = _read_points(vector, field_name, layer, len(sources), progress)
        rejected: dict[str, int] = {}
        starts, inside = _patch_starts(sources, datasets, grids, points, rejected)
        slots = np.flatnonzero(inside)  # the points whose patches lie in every source, in input order
        del inside
        if len(slots) == 0:
            raise InputError(_nothing_extracted(rejected, sources, datasets, points))
        tmpdir = scratch_dir(Path(targets[0]).parent, "otbtf-extraction")
        stack.callback(shutil.rmtree, tmpdir, True)
        groups = [
            _groups(src, grid, col0[slots], row0[slots], group_px)
            for src, grid, (col0, row0) in zip(sources, grids, starts, strict=True)
        ]
        steps = _Steps(progress, sum(len(g) for g in groups) + 1)
        buffers = []
        nodata_hit = np.zeros(len(slots), dtype=bool)
        for i, (src, ds, (col0, row0), source_groups) in enumerate(
            zip(sources, datasets, starts, groups, strict=True), 1
        ):
            buffer = _scratch(
                tmpdir / f"source{i}.raw", np.dtype(ds.dtypes[0]), (len(slots), ds.count, src.height, src.patch_width)
            )
            buffers.append(buffer)
            hits = _cut_source(src, ds, col0[slots], row0[slots], source_groups, buffer, steps)
            newly = hits & ~nodata_hit
            if newly.any():
                rejected[f"nodata in source {i}"] = int(newly.sum())
            nodata_hit |= hits
        keep = np.flatnonzero(~nodata_hit)  # positions in `slots`
        accepted = slots[keep]
        if len(accepted) == 0:
            raise InputError(_nothing_extracted(rejected, sources, datasets, points))
        staged = stack.enter_context(StagedOutputs())
        _write_patches(staged, sources, datasets, buffers, keep, targets, progress)
        labels_path = None
        polygon = origins(vector, points.fids[points.point_feature[accepted]], layer)
        if labels_output:
            labels_path = Path(labels_output)
            _write_labels(staged.file(labels_path), points.codes[points.point_feature[accepted]], points)
            col0, row0 = starts[0]
            write_origins(
                staged.file(origins_path(labels_path)),
                polygon,
                patch_centre(col0[accepted], sources[0].patch_width),
                patch_centre(row0[accepted], sources[0].height),
            )
        for buffer in buffers:
            buffer._mmap.close()  # type: ignore[attr-defined]  # release the temporary files before removal
        steps.finish()
        result = _result(targets, labels_path, points, accepted, rejected, field_name, datasets[0], polygon)
        for message in result.messages:
            progress.info(message)
        staged.commit()
    return result


def labels_image(path) -> Output | None:
    """A labels image output, with its origins table beside it."""
    return Output(path, companions=(*RASTER_COMPANIONS, ORIGINS_SUFFIX), suffixes=GEOTIFF) if path else None


def _check_request(sources: list[PatchSource], vector, outputs: list, field_name, labels_output) -> list[Path]:
    """The request's shape and its paths, before any file is opened."""
    if not sources:
        raise InputError("no source raster given")
    if len(outputs) != len(sources):
        raise InputError(f"{len(sources)} sources but {len(outputs)} outputs: give one output per source")
    for i, src in enumerate(sources, 1):
        if src.patch_width < 1 or src.height < 1:
            raise InputError(f"source {i}: patch size {src.patch_width} x {src.height} must be at least 1 x 1")
    if labels_output and not field_name:
        raise InputError("a labels image needs a class field (FIELD)")
    paths = [Path(p) for p in outputs]
    check_paths(
        {**{f"SOURCE{i}": s.path for i, s in enumerate(sources, 1)}, "VECTOR": vector},
        {
            **{f"OUTPUT{i}": geotiff(out) for i, out in enumerate(paths, 1)},
            "OUTPUT_LABELS": labels_image(labels_output),
        },
    )
    return paths


def _check_sources(sources: list[PatchSource], datasets) -> list[Grid]:
    """The sources' grids, once they are known to overlap and to be larger than their patches."""
    _check_overlap(datasets)
    grids = [grid_of(ds) for ds in datasets]
    for i, (src, grid) in enumerate(zip(sources, grids, strict=True), 1):
        if src.patch_width > grid.width or src.height > grid.height:
            raise InputError(
                f"source {i}: patch size {src.patch_width} x {src.height} px is larger than the "
                f"raster ({grid.width} x {grid.height} px); use at most {min(grid.width, grid.height)}"
            )
    return grids


def _read_points(vector, field_name, layer, n_sources: int, progress: Progress) -> Features:
    """The points (and their classes), refused when there are none or too many for memory."""
    points = read_features(vector, field_name, None, layer, values=True)  # a real field: values to regress
    others = points.geometry_types() - {"Point"}
    if others:
        raise InputError(
            f"VECTOR must hold points, not {', '.join(sorted(others))}; "
            "make points from polygons with otbtf:sampleselection first"
        )
    n = len(points.point_x)
    if n == 0:
        raise InputError(
            f"the vector {str(vector)!r} has no point"
            + (f" with a class in field {field_name!r}" if field_name else "")
        )
    needed = n * (BYTES_PER_POINT + 8 * n_sources)
    if needed > MEMORY_SHARE * physical_memory():
        raise InputError(
            f"{n} points would need about {mebibytes(needed)} of working memory, more than half "
            f"of this machine's {mebibytes(physical_memory())}: extract them in parts (split the "
            "points layer by area, e.g. with Vector > Research Tools > Create Grid and Clip)"
        )
    progress.info(
        f"{n} points: about {mebibytes(needed)} of working memory (the patches themselves go to "
        "a temporary file beside the output)"
    )
    return points


def _patch_starts(
    sources, datasets, grids, points: Features, rejected: dict[str, int]
) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Per source, ``(col0, row0)``: the first pixel of every point's patch (int32: a raster is far
    narrower than 2**31 px, so 8 bytes a point); and whether a point's patches lie in every
    source. Counts the points whose patch falls outside a source (the first that refuses it)."""
    starts = []
    alive = np.ones(len(points.point_x), dtype=bool)
    for i, (src, ds, grid) in enumerate(zip(sources, datasets, grids, strict=True), 1):
        x, y = transform_xy(points.point_x, points.point_y, points.crs_wkt, crs_wkt(ds))
        col, row = grid.pixel_of(x, y)
        del x, y
        col0 = patch_start(col, src.patch_width).astype(np.int32)
        row0 = patch_start(row, src.height).astype(np.int32)
        del col, row
        inside = patch_fits(col0, src.patch_width, grid.width) & patch_fits(row0, src.height, grid.height)
        outside = alive & ~inside
        if outside.any():
            rejected[f"patch not entirely inside source {i}"] = int(outside.sum())
        alive &= inside
        starts.append((col0, row0))
    return starts, alive


def _groups(src: PatchSource, grid: Grid, col0: np.ndarray, row0: np.ndarray, group_px: int) -> list[np.ndarray]:
    """Positions of the patches grouped by the block of ``group_px`` pixels holding their
    centre, blocks row by row: each group is one windowed read."""
    key = block_index(patch_centre(col0, src.patch_width), patch_centre(row0, src.height), group_px, grid.width)
    order = np.argsort(key, kind="stable")
    key = key[order]
    return np.split(order, np.flatnonzero(key[1:] != key[:-1]) + 1) if len(order) else []


class _Steps:
    """Progress over the reads of every source, and one last step for the writes."""

    def __init__(self, progress: Progress, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def step(self) -> None:
        self.done += 1
        self.progress.step(self.done, self.total)

    def finish(self) -> None:
        self.progress.step(self.total, self.total)


def _cut_source(
    src: PatchSource,
    ds,
    col0: np.ndarray,
    row0: np.ndarray,
    groups: list[np.ndarray],
    buffer: np.ndarray,
    steps: _Steps,
) -> np.ndarray:
    """The patches of one source into ``buffer``, a group at a time; returns, per patch,
    whether it holds a nodata value of the source."""
    nodata = nodata_values(ds, src.nodata)
    hits = np.zeros(len(col0), dtype=bool)
    for members in groups:
        check_cancelled(steps.progress, "patches extraction")
        c0, r0 = col0[members], row0[members]
        window = patches_window(c0, r0, src.patch_width, src.height)
        block = read(ds, window=window.to_rasterio())
        patches = cut_patches(block, c0 - window.col_off, r0 - window.row_off, src.patch_width, src.height)
        buffer[members] = patches
        if any(v is not None for v in nodata):
            bad = invalid_pixels(patches.transpose(1, 0, 2, 3).reshape(ds.count, len(members), -1), nodata)
            hits[members] = bad.any(axis=1)
        steps.step()
    return hits


def _write_patches(
    staged: StagedOutputs, sources, datasets, buffers, keep: np.ndarray, outputs: list[Path], progress: Progress
) -> None:
    """The kept patches of every source into its patches image, in point order."""
    for i, (src, ds, buffer, out) in enumerate(zip(sources, datasets, buffers, outputs, strict=True), 1):
        check_cancelled(progress, "patches extraction")
        with PatchesWriter(
            staged.file(out),
            len(keep),
            src.patch_width,
            src.height,
            ds.count,
            ds.dtypes[0],
            descriptions=list(ds.descriptions),
            tags={"OTBTF_SOURCE": Path(src.path).name, "OTBTF_SOURCE_INDEX": str(i)},
        ) as writer:
            for start in range(0, len(keep), WRITE_CHUNK):
                writer.write(np.asarray(buffer[keep[start : start + WRITE_CHUNK]]))


def _write_labels(path: Path, codes: np.ndarray, points: Features) -> None:
    """One 1 x 1 label patch per kept point; class names in the metadata when they are text."""
    tags = (
        {TAG_CLASS_CODES: ";".join(f"{name}={code}" for code, name in sorted(points.class_names.items()))}
        if points.string_classes
        else {}
    )
    with PatchesWriter(path, len(codes), 1, 1, 1, _label_dtype(codes), tags=tags) as writer:
        writer.write(codes.reshape(-1, 1, 1, 1))


def _result(
    outputs: list[Path],
    labels: Path | None,
    points: Features,
    accepted: np.ndarray,
    rejected: dict[str, int],
    field_name,
    reference,
    polygon: np.ndarray | None,
) -> Extraction:
    n = len(points.point_x)
    x, y = transform_xy(points.point_x[accepted], points.point_y[accepted], points.crs_wkt, crs_wkt(reference))
    features = points.point_feature[accepted]
    return Extraction(
        outputs=outputs,
        labels=labels,
        candidates=n,
        accepted=len(accepted),
        rejected=rejected,
        fids=points.fids[features] if polygon is None else polygon,
        codes=points.codes[features],
        x=np.asarray(x),
        y=np.asarray(y),
        class_names=points.class_names,
        string_classes=points.string_classes,
        field=field_name or "",
        crs_wkt=crs_wkt(reference),
        messages=[f"{len(accepted)} of {n} points extracted"]
        + [f"{count} rejected: {reason}" for reason, count in rejected.items()],
    )


def _scratch(path: Path, dtype, shape) -> np.ndarray:
    """A temporary array on disk, its space reserved now: a full disk fails here, clearly,
    instead of crashing later when the mapped pages are written."""
    size = int(np.prod(shape)) * dtype.itemsize
    try:
        with open(path, "wb") as handle:
            os.posix_fallocate(handle.fileno(), 0, max(size, 1))
    except OSError as err:
        raise InputError(
            f"no room for the {size / 2**20:.1f} MiB of temporary patches in {path.parent.parent}: "
            f"{err.strerror}. Free some space or write the outputs to another folder"
        ) from err
    return np.memmap(path, dtype=dtype, mode="r+", shape=shape)


def _label_dtype(codes: np.ndarray) -> str:
    """Class codes: the smallest integer type that holds them; values of a real field: float32
    (what training reads)."""
    if codes.dtype.kind == "f":
        return "float32"
    return class_code_types(int(codes.min()), int(codes.max()))[0][0]


def _nothing_extracted(rejected, sources, datasets, points: Features) -> str:
    reasons = "; ".join(f"{count} {reason}" for reason, count in rejected.items())
    parts = [f"no patch could be extracted from the {len(points.point_x)} points ({reasons})"]
    x, y = transform_xy(points.point_x, points.point_y, points.crs_wkt, crs_wkt(datasets[0]))
    parts.append(f"the points lie in {_describe_bounds((x.min(), y.min(), x.max(), y.max()))}")
    for i, (src, ds) in enumerate(zip(sources, datasets, strict=True), 1):
        grid = grid_of(ds)
        (left, right), (top, bottom) = margins_px(src.patch_width, 1), margins_px(src.height, 1)
        parts.append(
            f"source {i} covers {_describe_bounds(ds.bounds)}; a {src.patch_width} x {src.height} px patch "
            f"needs its centre at least {left} px from the left, {right} px from "
            f"the right, {top} px from the top and {bottom} px from the bottom edge "
            f"({abs(grid.res_x) * left:g} map units from the left)"
        )
    return "; ".join(parts)
