"""Patches images, the otbtf layout: one GeoTIFF per source, patches stacked in rows.

A patches image of ``n`` patches of ``h x w`` pixels is ``w`` pixels wide and
``n * h`` rows high; patch ``k`` occupies rows ``k*h .. k*h + h - 1``. Bands and
pixel type are the source's. otbtf assumes square patches (``h = w``); ours
record their size in the metadata (``OTBTF_PATCH_WIDTH``/``OTBTF_PATCH_HEIGHT``)
so non-square patches read back too. A labels image is a patches image of
1 x 1 patches (width 1, one row per patch).

Reading returns arrays in TensorFlow's order: ``(n, h, w, bands)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine
from rasterio.windows import Window as RioWindow

from .errors import InputError
from .raster import read, refuse_complex
from .raster_writer import WrittenRaster

TAG_WIDTH = "OTBTF_PATCH_WIDTH"
TAG_HEIGHT = "OTBTF_PATCH_HEIGHT"
TAG_CLASS_CODES = "OTBTF_CLASS_CODES"


class PatchesImageError(InputError):
    """A raster that is not a valid patches image; the message says why."""


class PatchesImage:
    """Windowed reader of a patches image (ours or otbtf's)."""

    def __init__(self, path: str | Path, patch_height: int | None = None):
        self.path = Path(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            try:
                self.dataset = rasterio.open(self.path)
            except rasterio.errors.RasterioIOError as err:
                raise PatchesImageError(f"cannot open patches image {str(path)!r}: {err}") from err
        refuse_complex(self.dataset, str(path))
        tags = self.dataset.tags()
        self.patch_width = self.dataset.width
        recorded = tags.get(TAG_HEIGHT)
        self.patch_height = int(patch_height or (int(recorded) if recorded else self.patch_width))
        rows = self.dataset.height
        if self.patch_height < 1 or rows % self.patch_height:
            n = rows // max(self.patch_height, 1)
            self.dataset.close()
            raise PatchesImageError(
                f"{self.path}: {rows} rows is not a multiple of the patch height {self.patch_height} "
                f"(patches of {self.patch_width} x {self.patch_height} px); {n} patches would need "
                f"{n * self.patch_height} rows. Give the right patch size, or check that this file "
                "is a patches image"
            )
        self.count = rows // self.patch_height
        self.bands = self.dataset.count
        self.dtype = np.dtype(self.dataset.dtypes[0])
        codes = tags.get(TAG_CLASS_CODES)
        self.class_codes = dict(item.rsplit("=", 1) for item in codes.split(";")) if codes else {}

    def __len__(self) -> int:
        return self.count

    def read(self, start: int, stop: int | None = None) -> np.ndarray:
        """Patches ``start .. stop - 1`` as ``(n, h, w, bands)``, in one windowed read."""
        stop = start + 1 if stop is None else stop
        if not 0 <= start <= stop <= self.count:
            raise PatchesImageError(
                f"{self.path}: patches {start}..{stop - 1} requested, the image holds {self.count} "
                f"(0..{self.count - 1})"
            )
        h, w = self.patch_height, self.patch_width
        data = read(self.dataset, window=RioWindow(0, start * h, w, (stop - start) * h))
        return data.reshape(self.bands, stop - start, h, w).transpose(1, 2, 3, 0)

    def close(self) -> None:
        self.dataset.close()

    def __enter__(self) -> PatchesImage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PatchesWriter:
    """Writes ``count`` patches, in order, into a (temporary) GeoTIFF path."""

    def __init__(
        self,
        path: Path,
        count: int,
        patch_width: int,
        patch_height: int,
        bands: int,
        dtype,
        descriptions: list[str | None] | None = None,
        tags: dict[str, str] | None = None,
    ):
        self.patch_width, self.patch_height, self.count = patch_width, patch_height, count
        profile = {
            "driver": "GTiff",
            "width": patch_width,
            "height": count * patch_height,
            "count": bands,
            "dtype": np.dtype(dtype).name,
            "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
            # Pixel units, north up, no CRS: the extent QGIS gives a raster without georeferencing,
            # written down so that its GDAL provider does not log "ERROR 1: Unable to compute a
            # transformation" each time the image is loaded (otbtf ignores it).
            "transform": Affine(1, 0, 0, 0, -1, 0),
        }
        self.dataset = WrittenRaster(
            path,
            profile,
            descriptions or [],
            {TAG_WIDTH: str(patch_width), TAG_HEIGHT: str(patch_height), **(tags or {})},
        )
        self.written = 0

    def write(self, patches: np.ndarray) -> None:
        """Append ``(n, bands, h, w)`` patches."""
        n = len(patches)
        if n == 0:
            return
        bands = patches.shape[1]
        block = patches.transpose(1, 0, 2, 3).reshape(bands, n * self.patch_height, self.patch_width)
        window = RioWindow(0, self.written * self.patch_height, self.patch_width, n * self.patch_height)
        self.dataset.write(block, window=window)
        self.written += n

    def __enter__(self) -> PatchesWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        """Closed complete, or (on an error, which goes on) discarded."""
        if error is None:
            self.dataset.close()
        else:
            self.dataset.discard()


# Where each patch comes from, in a table beside the labels image (``labels.origins.csv``):
# the polygon of its sample point (``originfid``, empty when unknown) and its centre pixel in
# source 1. Training holds out whole polygons with it (spatial blocks when the polygon is
# unknown); otbtf ignores it.
ORIGINS_SUFFIX = ".origins.csv"
ORIGINS_HEADER = "patch,originfid,col,row"


@dataclass
class PatchOrigins:
    """The polygon (None: unknown) and source-1 centre pixel of every patch."""

    polygon: np.ndarray | None
    col: np.ndarray
    row: np.ndarray


def origins_path(labels: str | Path) -> Path:
    return Path(labels).with_suffix(ORIGINS_SUFFIX)


def write_origins(path: Path, polygon: np.ndarray | None, col: np.ndarray, row: np.ndarray) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.write(ORIGINS_HEADER + "\n")
        polygons = polygon.tolist() if polygon is not None else [""] * len(col)
        for k, (fid, c, r) in enumerate(zip(polygons, col.tolist(), row.tolist(), strict=True)):
            out.write(f"{k},{fid},{c},{r}\n")


def read_origins(labels: str | Path, count: int) -> tuple[PatchOrigins | None, str]:
    """The origins table beside ``labels``, or None and why it cannot be used."""
    path = origins_path(labels)
    if not path.is_file():
        return None, f"no {path.name} beside the labels image"
    try:
        with open(path, encoding="utf-8") as table:
            if table.readline().strip() != ORIGINS_HEADER:
                return None, f"{path.name} does not start with {ORIGINS_HEADER!r}"
            rows = [line.rstrip("\n").split(",") for line in table if line.strip()]
        if len(rows) != count or any(len(r) != 4 for r in rows):
            return None, f"{path.name} describes {len(rows)} patches, the labels image holds {count}"
        col = np.asarray([int(r[2]) for r in rows], dtype=np.int64)
        row = np.asarray([int(r[3]) for r in rows], dtype=np.int64)
        known = [r[1] for r in rows]
        polygon = np.asarray([int(v) for v in known], dtype=np.int64) if all(known) else None
    except (OSError, ValueError, UnicodeDecodeError) as err:
        return None, f"{path.name} cannot be read ({err})"
    return PatchOrigins(polygon, col, row), ""
