"""Independent references for the engine tests: GDAL's geotransform and shapely's
point-in-polygon, pixel centre by pixel centre (no rasterio, no engine code)."""

import shapely.geometry
import shapely.wkb
from osgeo import gdal, ogr
from shapely.geometry import Point
from shapely.prepared import prep

from common import POLYGONS

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
    return {
        (c, r)
        for r in rows
        for c in cols
        if shape.contains(Point(x0 + (c + 0.5) * rx, y0 + (r + 0.5) * ry)) and (valid is None or bool(valid[r, c]))
    }


def reference_counts(raster_path, geometries, valid=None) -> list[int]:
    return [len(covered_pixels(raster_path, g, valid)) for g in geometries]


def split_polygons(path, parts=3):
    """The sample polygons cut into ``parts`` vertical strips each: several polygons per
    class, so that whole polygons can be held out for validation."""
    source = ogr.Open(str(POLYGONS))
    layer = source.GetLayer(0)
    names = sorted({f.GetField("name") for f in layer})
    layer.ResetReading()
    target = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    out = target.CreateLayer("parts", layer.GetSpatialRef(), ogr.wkbPolygon)
    out.CreateField(ogr.FieldDefn("name", ogr.OFTString))
    out.CreateField(ogr.FieldDefn("code", ogr.OFTInteger))
    for feature in layer:
        geom = shapely.wkb.loads(bytes(feature.GetGeometryRef().ExportToWkb()))
        xmin, ymin, xmax, ymax = geom.bounds
        for k in range(parts):
            width = (xmax - xmin) / parts
            strip = shapely.geometry.box(xmin + k * width, ymin, xmin + (k + 1) * width, ymax)
            piece = geom.intersection(strip)
            if piece.is_empty or piece.area == 0:
                continue
            new = ogr.Feature(out.GetLayerDefn())
            new.SetGeometry(ogr.CreateGeometryFromWkb(piece.wkb))
            new.SetField("name", feature.GetField("name"))
            new.SetField("code", names.index(feature.GetField("name")) + 1)
            out.CreateFeature(new)
    target = None
    return path
