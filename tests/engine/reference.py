"""Independent references for the engine tests: GDAL's geotransform and shapely's
point-in-polygon, pixel centre by pixel centre (no rasterio, no engine code)."""

from osgeo import gdal
from shapely.geometry import Point
from shapely.prepared import prep

gdal.UseExceptions()


def covered_pixels(raster_path, geometry, valid=None) -> set[tuple[int, int]]:
    """``{(col, row)}`` of the pixels whose centre lies inside ``geometry``."""
    ds = gdal.Open(str(raster_path))
    x0, rx, _, y0, _, ry = ds.GetGeoTransform()
    width, height = ds.RasterXSize, ds.RasterYSize
    xmin, ymin, xmax, ymax = geometry.bounds
    cols = range(max(int((xmin - x0) / rx) - 1, 0), min(int((xmax - x0) / rx) + 2, width))
    rows = range(max(int((ymax - y0) / ry) - 1, 0), min(int((ymin - y0) / ry) + 2, height))
    shape = prep(geometry)
    return {(c, r) for r in rows for c in cols
            if shape.contains(Point(x0 + (c + 0.5) * rx, y0 + (r + 0.5) * ry))
            and (valid is None or bool(valid[r, c]))}


def reference_counts(raster_path, geometries, valid=None) -> list[int]:
    return [len(covered_pixels(raster_path, g, valid)) for g in geometries]
