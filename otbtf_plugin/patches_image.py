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
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window as RioWindow

from .errors import InputError
from .raster import close_written, read, refuse_complex, write

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

    def __init__(self, path: Path, count: int, patch_width: int, patch_height: int, bands: int, dtype,
                 descriptions: list[str | None] | None = None, tags: dict[str, str] | None = None):
        self.patch_width, self.patch_height, self.count = patch_width, patch_height, count
        profile = {
            "driver": "GTiff", "width": patch_width, "height": count * patch_height, "count": bands,
            "dtype": np.dtype(dtype).name, "compress": "deflate", "BIGTIFF": "IF_SAFER",
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self.dataset = rasterio.open(path, "w", **profile)
        self.dataset.update_tags(**{TAG_WIDTH: str(patch_width), TAG_HEIGHT: str(patch_height)},
                                 **(tags or {}))
        for band, text in enumerate(descriptions or [], 1):
            if text:
                self.dataset.set_band_description(band, text)
        self.written = 0

    def write(self, patches: np.ndarray) -> None:
        """Append ``(n, bands, h, w)`` patches."""
        n = len(patches)
        if n == 0:
            return
        bands = patches.shape[1]
        block = patches.transpose(1, 0, 2, 3).reshape(bands, n * self.patch_height, self.patch_width)
        window = RioWindow(0, self.written * self.patch_height, self.patch_width, n * self.patch_height)
        write(self.dataset, block, window=window)
        self.written += n

    def close(self) -> None:
        close_written(self.dataset)
