"""Patches extraction: one patch per point and per source, into patches images.

For each point and each source, the patch is centred on the source pixel that
contains the point (API.md rule: ``c - P // 2 .. c - P // 2 + P - 1``), so
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
from .grid import Window, patch_start
from .outputs import StagedOutputs, check_paths, geotiff
from .patches_image import TAG_CLASS_CODES, PatchesWriter
from .progress import NullProgress, Progress, check_cancelled, mebibytes
from .raster import class_code_types, crs_wkt, grid_of, invalid_pixels, nodata_values, open_raster, read
from .scratch import scratch_dir
from .vector import read_features, transform_xy

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
    fids: np.ndarray  # of the accepted points, in patch order
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
        boxes.append(transform_bounds(ds.crs, reference.crs, *ds.bounds) if ds.crs and reference.crs
                     and ds.crs != reference.crs else ds.bounds)
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


def extract_patches(sources: list[PatchSource], vector, outputs: list[str | Path], field_name: str | None = None,
                    labels_output: str | Path | None = None, layer: str | None = None,
                    group_px: int = GROUP_PX, progress: Progress | None = None) -> Extraction:
    """Extract one patch per point and per source (see module doc)."""
    progress = progress or NullProgress()
    if not sources:
        raise InputError("no source raster given")
    if len(outputs) != len(sources):
        raise InputError(f"{len(sources)} sources but {len(outputs)} outputs: give one output per source")
    for i, src in enumerate(sources, 1):
        if src.patch_width < 1 or src.height < 1:
            raise InputError(f"source {i}: patch size {src.patch_width} x {src.height} must be at least 1 x 1")
    if labels_output and not field_name:
        raise InputError("a labels image needs a class field (FIELD)")
    outputs = [Path(p) for p in outputs]
    check_paths({**{f"SOURCE{i}": s.path for i, s in enumerate(sources, 1)}, "VECTOR": vector},
                {**{f"OUTPUT{i}": geotiff(out) for i, out in enumerate(outputs, 1)},
                 "OUTPUT_LABELS": geotiff(labels_output)})
    with ExitStack() as stack:
        # Each window is read once: GDAL's block cache (5 % of the RAM by default) need not grow.
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=64))
        datasets = [stack.enter_context(open_raster(s.path)) for s in sources]
        _check_overlap(datasets)
        grids = [grid_of(ds) for ds in datasets]
        for i, (src, grid) in enumerate(zip(sources, grids, strict=True), 1):
            if src.patch_width > grid.width or src.height > grid.height:
                raise InputError(
                    f"source {i}: patch size {src.patch_width} x {src.height} px is larger than the "
                    f"raster ({grid.width} x {grid.height} px); use at most {min(grid.width, grid.height)}"
                )
        feats = read_features(vector, field_name, None, layer)
        others = feats.geometry_types() - {"Point"}
        if others:
            raise InputError(
                f"VECTOR must hold points, not {', '.join(sorted(others))}; "
                "make points from polygons with otbtf:sampleselection first"
            )
        part_feature, px, py = feats.point_feature, feats.point_x, feats.point_y
        n = len(px)
        if n == 0:
            raise InputError(f"the vector {str(vector)!r} has no point"
                             + (f" with a class in field {field_name!r}" if field_name else ""))
        needed = n * (BYTES_PER_POINT + 8 * len(sources))
        if needed > MEMORY_SHARE * physical_memory():
            raise InputError(f"{n} points would need about {mebibytes(needed)} of working memory, more than half "
                             f"of this machine's {mebibytes(physical_memory())}: extract them in parts (split the "
                             "points layer by area, e.g. with Vector > Research Tools > Create Grid and Clip)")
        progress.info(f"{n} points: about {mebibytes(needed)} of working memory (the patches themselves go to "
                      "a temporary file beside the output)")
        rejected: dict[str, int] = {}
        alive = np.ones(n, dtype=bool)
        starts = []  # per source: (col0, row0) of every point's patch
        for i, (src, ds, grid) in enumerate(zip(sources, datasets, grids, strict=True), 1):
            x, y = transform_xy(px, py, feats.crs_wkt, crs_wkt(ds))
            col, row = grid.pixel_of(x, y)
            del x, y
            # int32 patch starts (a raster is far narrower than 2**31 px): 8 bytes a point per source
            col0, row0 = (patch_start(col, src.patch_width).astype(np.int32),
                          patch_start(row, src.height).astype(np.int32))
            del col, row
            inside = (col0 >= 0) & (row0 >= 0) & (col0 + src.patch_width <= grid.width) \
                & (row0 + src.height <= grid.height)
            outside = alive & ~inside
            if outside.any():
                rejected[f"patch not entirely inside source {i}"] = int(outside.sum())
            alive &= inside
            starts.append((col0, row0))

        slots = np.flatnonzero(alive)  # candidate points still possible, in input order
        if len(slots) == 0:
            raise InputError(_nothing_extracted(n, rejected, sources, datasets, px, py, feats.crs_wkt))
        tmpdir = scratch_dir(Path(outputs[0]).parent, "otbtf-extraction")
        stack.callback(shutil.rmtree, tmpdir, True)
        buffers = []
        groups_total = 0
        plans = []
        for src, (col0, row0), grid in zip(sources, starts, grids, strict=True):
            # Points grouped by the block of group_px pixels holding their centre, blocks row by row.
            columns = grid.width // group_px + 1
            key = ((row0[slots].astype(np.int64) + src.height // 2) // group_px) * columns \
                + (col0[slots] + src.patch_width // 2) // group_px
            order = np.argsort(key, kind="stable")
            key = key[order]
            bounds = np.flatnonzero(key[1:] != key[:-1]) + 1
            del key
            plans.append(np.split(order, bounds) if len(order) else [])
            groups_total += len(plans[-1])
        done = 0
        nodata_hit = np.zeros(n, dtype=bool)
        for i, (src, ds, (col0, row0), plan) in enumerate(zip(sources, datasets, starts, plans, strict=True), 1):
            buffer = _scratch(tmpdir / f"source{i}.raw", np.dtype(ds.dtypes[0]),
                              (len(slots), ds.count, src.height, src.patch_width))
            buffers.append(buffer)
            nodata = nodata_values(ds, src.nodata)
            hits = np.zeros(len(slots), dtype=bool)
            for members in plan:  # members: positions in `slots`
                check_cancelled(progress, "patches extraction")
                c0, r0 = col0[slots[members]], row0[slots[members]]
                window = Window(int(c0.min()), int(r0.min()), int(c0.max() - c0.min()) + src.patch_width,
                                int(r0.max() - r0.min()) + src.height)
                block = read(ds, window=window.to_rasterio())
                rows = (r0 - window.row_off)[:, None, None] + np.arange(src.height)[None, :, None]
                cols = (c0 - window.col_off)[:, None, None] + np.arange(src.patch_width)[None, None, :]
                patches = block[:, rows, cols].transpose(1, 0, 2, 3)  # (m, bands, h, w)
                buffer[members] = patches
                if any(v is not None for v in nodata):
                    bad = invalid_pixels(patches.transpose(1, 0, 2, 3).reshape(ds.count, len(members), -1),
                                         nodata)
                    hits[members] = bad.any(axis=1)
                done += 1
                progress.step(done, groups_total + 1)
            newly = hits & ~nodata_hit[slots]
            if newly.any():
                rejected[f"nodata in source {i}"] = int(newly.sum())
            nodata_hit[slots] |= hits
        keep = ~nodata_hit[slots]  # over slots
        accepted = slots[keep]
        if len(accepted) == 0:
            raise InputError(_nothing_extracted(n, rejected, sources, datasets, px, py, feats.crs_wkt))

        staged = stack.enter_context(StagedOutputs())
        finals = [staged.file(out) for out in [*outputs, *([Path(labels_output)] if labels_output else [])]]
        codes_tag = {TAG_CLASS_CODES: ";".join(f"{name}={code}" for code, name in sorted(feats.class_names.items()))} \
            if feats.string_classes else {}
        keep_positions = np.flatnonzero(keep)
        for i, (src, ds, buffer, tmp) in enumerate(zip(sources, datasets, buffers, finals, strict=False), 1):
            check_cancelled(progress, "patches extraction")
            writer = PatchesWriter(tmp, len(accepted), src.patch_width, src.height, ds.count, ds.dtypes[0],
                                   descriptions=list(ds.descriptions),
                                   tags={"OTBTF_SOURCE": Path(src.path).name, "OTBTF_SOURCE_INDEX": str(i)})
            try:
                for start in range(0, len(keep_positions), WRITE_CHUNK):
                    writer.write(np.asarray(buffer[keep_positions[start:start + WRITE_CHUNK]]))
            finally:
                writer.close()
        labels_path = None
        if labels_output:
            codes = feats.codes[part_feature[accepted]]
            writer = PatchesWriter(finals[-1], len(accepted), 1, 1, 1, _label_dtype(codes), tags=codes_tag)
            try:
                writer.write(codes.reshape(-1, 1, 1, 1))
            finally:
                writer.close()
            labels_path = Path(labels_output)
        for buffer in buffers:
            buffer._mmap.close()  # type: ignore[attr-defined]  # release the temporary files before removal
        progress.step(groups_total + 1, groups_total + 1)
        x1, y1 = transform_xy(px[accepted], py[accepted], feats.crs_wkt, crs_wkt(datasets[0]))
        messages = [f"{len(accepted)} of {n} points extracted"] + [f"{count} rejected: {reason}"
                                                                    for reason, count in rejected.items()]
        for message in messages:
            progress.info(message)
        result = Extraction(
            outputs=[Path(p) for p in outputs], labels=labels_path, candidates=n, accepted=len(accepted),
            rejected=rejected,
            fids=feats.fids[part_feature[accepted]], codes=feats.codes[part_feature[accepted]],
            x=np.asarray(x1), y=np.asarray(y1), class_names=feats.class_names,
            string_classes=feats.string_classes, field=field_name or "", crs_wkt=crs_wkt(datasets[0]),
            messages=messages,
        )
        staged.commit()
    return result


def _scratch(path: Path, dtype, shape) -> np.ndarray:
    """A temporary array on disk, its space reserved now: a full disk fails here, clearly,
    instead of crashing later when the mapped pages are written."""
    size = int(np.prod(shape)) * dtype.itemsize
    try:
        with open(path, "wb") as handle:
            os.posix_fallocate(handle.fileno(), 0, max(size, 1))
    except OSError as err:
        raise InputError(f"no room for the {size / 2**20:.1f} MiB of temporary patches in {path.parent.parent}: "
                         f"{err.strerror}. Free some space or write the outputs to another folder") from err
    return np.memmap(path, dtype=dtype, mode="r+", shape=shape)


def _label_dtype(codes: np.ndarray) -> str:
    return class_code_types(int(codes.min()), int(codes.max()))[0][0]


def _nothing_extracted(n, rejected, sources, datasets, px, py, points_wkt) -> str:
    reasons = "; ".join(f"{count} {reason}" for reason, count in rejected.items())
    parts = [f"no patch could be extracted from the {n} points ({reasons})"]
    x, y = transform_xy(px, py, points_wkt, crs_wkt(datasets[0]))
    parts.append(f"the points lie in {_describe_bounds((x.min(), y.min(), x.max(), y.max()))}")
    for i, (src, ds) in enumerate(zip(sources, datasets, strict=True), 1):
        grid = grid_of(ds)
        before_x, before_y = src.patch_width // 2, src.height // 2
        parts.append(
            f"source {i} covers {_describe_bounds(ds.bounds)}; a {src.patch_width} x {src.height} px patch "
            f"needs its centre at least {before_x} px from the left, {src.patch_width - before_x - 1} px from "
            f"the right, {before_y} px from the top and {src.height - before_y - 1} px from the bottom edge "
            f"({abs(grid.res_x) * before_x:g} map units from the left)"
        )
    return "; ".join(parts)
