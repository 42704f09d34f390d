"""Reading vector ground truth: features, class values, reprojection.

Uses GDAL/OGR (true feature ids, every format QGIS reads) and shapely for
geometry. Class values may be integers or strings; a string class gets a
stable integer code (its rank among the sorted class names, from 1).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import shutil
import threading
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely.wkb
from osgeo import gdal, ogr, osr
from shapely.validation import make_valid

from .errors import InputError
from .outputs import atomic_output, unchanged
from .raster import CLASS_CODE_RANGE
from .scratch import scratch_dir

_EXCEPTIONS_LOCK = threading.Lock()
_exceptions_users = 0
_previous_modes: tuple[int, int, int] = (0, 0, 0)


def gdal_exceptions(function):
    """Run ``function`` with GDAL, OGR and OSR raising exceptions, then give them back the mode
    they had: the mode is process-wide in the GDAL of Debian 12, and QGIS and other plugins
    rely on their own choice. Nested and concurrent calls share one switch (counted)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        global _exceptions_users, _previous_modes
        with _EXCEPTIONS_LOCK:
            if _exceptions_users == 0:
                _previous_modes = (gdal.GetUseExceptions(), ogr.GetUseExceptions(), osr.GetUseExceptions())
                for module in (gdal, ogr, osr):
                    module.UseExceptions()
            _exceptions_users += 1
        try:
            return function(*args, **kwargs)
        finally:
            with _EXCEPTIONS_LOCK:
                _exceptions_users -= 1
                if _exceptions_users == 0:  # in the reverse order: GDAL keeps a stack of error handlers
                    for module, used in reversed(list(zip((gdal, ogr, osr), _previous_modes, strict=True))):
                        if not used:
                            module.DontUseExceptions()

    return wrapper


@dataclass
class Features:
    """Features of a layer in the raster's CRS, with their class codes."""

    fids: np.ndarray  # int64, the layer's own feature ids
    codes: np.ndarray  # int64 class code of each feature (float64 values of a real field: read_features)
    geometries: list  # shapely geometry of each areal/linear feature; None for point features
    class_names: dict[int, str]  # code -> class as written in the layer
    field: str
    string_classes: bool
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)  # reason -> count
    crs_wkt: str | None = None  # CRS of the geometries (None: unknown)
    layer_crs_wkt: str | None = None  # the layer's own CRS, before any reprojection (None: none)
    # Point and multi-point features, as flat arrays of their parts (no shapely: fast).
    # part -> feature index
    point_feature: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    point_x: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    point_y: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return len(self.fids)

    @property
    def is_point(self) -> np.ndarray:
        return np.array([g is None for g in self.geometries], dtype=bool)

    def geometry_types(self) -> set[str]:
        return {"Point" if g is None else g.geom_type for g in self.geometries}


@gdal_exceptions
def open_layer(path: str | Path, layer: str | None = None):
    """Open a vector file; ``path|layername=x`` (QGIS' form) is understood too."""
    path = str(path)
    if "|layername=" in path:
        path, _, rest = path.partition("|layername=")
        layer = layer or rest.split("|", 1)[0]
    try:
        dataset = ogr.Open(path)
    except RuntimeError as err:
        raise InputError(f"cannot open vector {path!r}: {err}") from err
    if dataset is None:
        raise InputError(f"cannot open vector {path!r}: not a vector format GDAL reads")
    if layer:
        lyr = dataset.GetLayerByName(layer)
        if lyr is None:
            names = [dataset.GetLayerByIndex(i).GetName() for i in range(dataset.GetLayerCount())]
            raise InputError(f"vector {path!r} has no layer {layer!r}; its layers: {', '.join(names)}")
    else:
        lyr = dataset.GetLayerByIndex(0)
    return dataset, lyr


@gdal_exceptions
def read_fields(
    path: str | Path, names: list[str], layer: str | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, str]]:
    """``(fids, {name: float64 values, NaN where NULL}, layer metadata)`` of numeric
    fields, in layer order. A missing or non-numeric field is an error naming the
    fields that would work."""
    dataset, lyr = open_layer(path, layer)
    definition = lyr.GetLayerDefn()
    numeric = (ogr.OFTInteger, ogr.OFTInteger64, ogr.OFTReal)
    available = {
        definition.GetFieldDefn(i).GetName(): definition.GetFieldDefn(i).GetType()
        for i in range(definition.GetFieldCount())
    }
    usable = [n for n, t in available.items() if t in numeric]
    for name in names:
        if name not in available:
            raise InputError(f"the vector has no field {name!r}; its numeric fields: {', '.join(usable) or '(none)'}")
        if available[name] not in numeric:
            raise InputError(f"field {name!r} is not numeric; numeric fields: {', '.join(usable) or '(none)'}")
    indices = [definition.GetFieldIndex(n) for n in names]
    fids, rows = [], []
    lyr.ResetReading()
    for feature in lyr:
        fids.append(feature.GetFID())
        rows.append([feature.GetFieldAsDouble(i) if feature.IsFieldSetAndNotNull(i) else np.nan for i in indices])
    values = np.asarray(rows, dtype=np.float64).reshape(len(fids), len(names))
    metadata = lyr.GetMetadata() or {}
    del dataset  # closes the file (the layer was read)
    return np.asarray(fids, dtype=np.int64), {n: values[:, k] for k, n in enumerate(names)}, metadata


ORIGIN_FIELD = "originfid"  # the polygon a sample point was drawn from (sample selection writes it)


def origins(path: str | Path, fids: np.ndarray, layer: str | None = None) -> np.ndarray | None:
    """The ``originfid`` of the features ``fids`` (int64), or None when the layer has no such
    numeric field or a feature has none."""
    try:
        all_fids, values, _ = read_fields(path, [ORIGIN_FIELD], layer)
    except InputError:
        return None
    origin = values[ORIGIN_FIELD]
    if np.isnan(origin).any():
        return None
    row_of = {f: k for k, f in enumerate(all_fids.tolist())}
    return origin[[row_of[f] for f in np.asarray(fids).tolist()]].astype(np.int64)


def _transform_to(layer, raster_wkt: str | None):
    source = layer.GetSpatialRef()
    if source is None or not raster_wkt:
        return None
    target = osr.SpatialReference()
    target.ImportFromWkt(raster_wkt)
    for srs in (source, target):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    if source.IsSame(target):
        return None
    try:
        return osr.CoordinateTransformation(source, target)
    except RuntimeError as err:
        # PROJ names the CRSs in its message; newer versions as whole PROJJSON documents.
        reason = str(err).split("\n", 1)[0].split(" from ", 1)[0].rstrip(" `{") or "no coordinate operation"
        raise InputError(
            f"cannot transform the vector's CRS ({source.GetName()}) to the raster's "
            f"({target.GetName()}): {reason}; reproject the vector to the raster's CRS first"
        ) from err


@gdal_exceptions
def read_features(  # noqa: C901
    path: str | Path,
    field_name: str | None,
    raster_wkt: str | None,
    layer: str | None = None,
    values: bool = False,
) -> Features:
    """Every feature with a geometry (and a class when ``field_name`` is given),
    reprojected to ``raster_wkt``; invalid polygons are repaired. ``values``: a real
    (floating-point) field is also accepted, its values kept as they are (regression targets:
    ``codes`` is then float64 and there are no class names).

    Features with no geometry or a NULL class are skipped and counted in
    ``Features.skipped``.
    """
    dataset, lyr = open_layer(path, layer)
    field_index, string_classes = _class_field(lyr.GetLayerDefn(), field_name, values)
    real = field_index >= 0 and lyr.GetLayerDefn().GetFieldDefn(field_index).GetType() == ogr.OFTReal
    transform = _transform_to(lyr, raster_wkt)
    # Geometries end up in the raster's CRS when one is given, else stay in the layer's.
    source_srs = lyr.GetSpatialRef()
    geometries_wkt = raster_wkt or (source_srs.ExportToWkt() if source_srs is not None else None)
    # Compact accumulators (8 bytes a value): millions of points must not become Python objects.
    fids, labels, geometries = array("q"), array("q"), []
    seen: dict = {}  # class value as read -> index of first appearance
    part_feature, part_x, part_y = array("q"), array("d"), array("d")
    skipped = {"no geometry": 0, "NULL class": 0, "cannot be reprojected": 0}
    lyr.ResetReading()
    for feature in lyr:
        geom = feature.GetGeometryRef()
        if geom is None or geom.IsEmpty():
            skipped["no geometry"] += 1
            continue
        if field_index >= 0 and not feature.IsFieldSetAndNotNull(field_index):
            skipped["NULL class"] += 1
            continue
        kind = ogr.GT_Flatten(geom.GetGeometryType())
        shape = None
        if kind == ogr.wkbPoint:
            part_feature.append(len(fids))
            part_x.append(geom.GetX())
            part_y.append(geom.GetY())
        elif kind == ogr.wkbMultiPoint:
            for k in range(geom.GetGeometryCount()):
                part_feature.append(len(fids))
                part_x.append(geom.GetGeometryRef(k).GetX())
                part_y.append(geom.GetGeometryRef(k).GetY())
        else:
            geom = geom.Clone()
            if transform is not None:
                try:
                    geom.Transform(transform)
                except RuntimeError:
                    skipped["cannot be reprojected"] += 1
                    continue
            shape = shapely.wkb.loads(bytes(geom.ExportToIsoWkb()))
            if not shape.is_valid:
                shape = make_valid(shape)
        fids.append(feature.GetFID())
        if field_index < 0:
            value = 0
        elif string_classes:
            value = feature.GetFieldAsString(field_index)
        elif real:
            value = feature.GetFieldAsDouble(field_index)
        else:
            value = feature.GetFieldAsInteger64(field_index)
        labels.append(seen.setdefault(value, len(seen)))
        geometries.append(shape)
    xy = (
        np.stack([np.frombuffer(part_x, dtype=float), np.frombuffer(part_y, dtype=float)], axis=1)
        if len(part_x)
        else np.zeros((0, 2))
    )
    point_feature = np.frombuffer(part_feature, dtype=np.int64).copy()
    fid_values = np.frombuffer(fids, dtype=np.int64).copy()
    label_index = np.frombuffer(labels, dtype=np.int64).copy()
    del part_x, part_y
    if transform is not None and len(xy):
        xy, ok = _transform_points(transform, xy)
        if not ok.all():  # drop the features with a part that cannot be reprojected
            bad = np.zeros(len(fid_values), dtype=bool)
            bad[point_feature[~ok]] = True
            skipped["cannot be reprojected"] += int(bad.sum())
            keep = ~bad
            renumber = np.cumsum(keep) - 1
            part_keep = keep[point_feature]
            xy, point_feature = xy[part_keep], renumber[point_feature[part_keep]]
            fid_values, label_index = fid_values[keep], label_index[keep]
            geometries = [g for g, k in zip(geometries, keep, strict=True) if k]
    del dataset
    if real:
        codes = np.asarray(list(seen), dtype=np.float64)[label_index] if len(label_index) else np.zeros(0)
        if not np.isfinite(codes).all():
            raise InputError(
                f"the field {field_name!r} holds values that are not finite numbers (nan or infinite): "
                "fix or remove those features"
            )
        class_names: dict[int, str] = {}
    else:
        codes, class_names = _class_codes(list(seen), label_index, string_classes, field_name)
    return Features(
        fids=fid_values,
        codes=codes,
        geometries=geometries,
        class_names=class_names,
        field=field_name or "",
        string_classes=string_classes,
        skipped={k: v for k, v in skipped.items() if v},
        crs_wkt=geometries_wkt,
        layer_crs_wkt=source_srs.ExportToWkt() if source_srs is not None else None,
        point_feature=point_feature,
        point_x=xy[:, 0].copy(),
        point_y=xy[:, 1].copy(),
    )


def _class_field(definition, field_name: str | None, values: bool = False) -> tuple[int, bool]:
    """(index of the class field, whether its classes are text); (-1, False) without one."""
    if not field_name:
        return -1, False
    index = definition.GetFieldIndex(field_name)
    if index < 0:
        names = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
        raise InputError(f"the vector has no field {field_name!r}; its fields: {', '.join(names) or '(none)'}")
    field_type = definition.GetFieldDefn(index).GetType()
    if field_type in (ogr.OFTInteger, ogr.OFTInteger64):
        return index, False
    if field_type == ogr.OFTString:
        return index, True
    if values and field_type == ogr.OFTReal:
        return index, False
    raise InputError(
        f"class field {field_name!r} is of type {ogr.GetFieldTypeName(field_type)}; "
        "use an integer or text field"
        + (" (values to regress are taken by otbtf:patchesextraction)" if field_type == ogr.OFTReal else "")
    )


def _class_codes(
    values: list, label_index: np.ndarray, string_classes: bool, field_name: str | None = None
) -> tuple[np.ndarray, dict[int, str]]:
    """Each feature's class code and the names of the codes present: integer classes are their
    own codes; text classes get 1, 2, ... in alphabetical order. ``values``: the classes as
    read, by first appearance; ``label_index``: each feature's index into them."""
    present = [values[i] for i in np.unique(label_index)] if len(label_index) else []
    low, high = CLASS_CODE_RANGE
    outside = sorted({int(v) for v in present if not string_classes and not low <= int(v) <= high})
    if outside:
        raise InputError(
            f"the class field {field_name!r} holds the code {outside[0]}, which a class map cannot hold "
            f"(32-bit: {low} .. {high}): recode the classes with smaller numbers"
        )
    if string_classes:
        code_of = {name: code for code, name in enumerate(sorted(present), 1)}
        lookup = np.array([code_of.get(v, 0) for v in values], dtype=np.int64)
        class_names = {code: name for name, code in code_of.items()}
    else:
        lookup = np.array(values, dtype=np.int64)
        class_names = {int(c): str(c) for c in sorted(present)}
    codes = lookup[label_index] if len(label_index) else np.zeros(0, dtype=np.int64)
    return np.asarray(codes, dtype=np.int64), class_names


TRANSFORM_CHUNK = 65536  # points handed to OSR at once (as Python lists: bounded)


@gdal_exceptions
def crs_name(wkt: str) -> str:
    """The name of a CRS given as WKT ("WGS 84 / UTM zone 21N")."""
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    return srs.GetName() or "a CRS"


def _transform_points(transform, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Transform ``(n, 2)`` coordinates in bulk, by chunks; also says which succeeded."""
    out = np.full_like(xy, np.inf, dtype=float)
    for start in range(0, len(xy), TRANSFORM_CHUNK):
        chunk = xy[start : start + TRANSFORM_CHUNK]
        try:
            out[start : start + len(chunk)] = np.asarray(transform.TransformPoints(chunk.tolist()), dtype=float)[:, :2]
        except RuntimeError:  # some point failed: one by one, to find which
            for k, (x, y) in enumerate(chunk.tolist(), start):
                with contextlib.suppress(RuntimeError):
                    out[k] = transform.TransformPoint(x, y)[:2]
    return out, np.isfinite(out).all(axis=1)


@gdal_exceptions
def transform_xy(
    x: np.ndarray, y: np.ndarray, source_wkt: str | None, target_wkt: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates from one CRS to another (unchanged when either is unknown
    or both are the same CRS, however written)."""
    if not source_wkt or not target_wkt or len(x) == 0:
        return x, y
    source, target = osr.SpatialReference(), osr.SpatialReference()
    source.ImportFromWkt(source_wkt)
    target.ImportFromWkt(target_wkt)
    for srs in (source, target):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    if source.IsSame(target):
        return x, y
    transform = osr.CoordinateTransformation(source, target)
    out = np.asarray(transform.TransformPoints(np.column_stack([x, y]).tolist()), dtype=float)
    return out[:, 0], out[:, 1]


VECTOR_DRIVERS = {
    ".gpkg": "GPKG",
    ".sqlite": "SQLite",
    ".shp": "ESRI Shapefile",
    ".geojson": "GeoJSON",
    ".fgb": "FlatGeobuf",
    ".csv": "CSV",
}


def _translate_table(
    table: Path,
    partial: Path,
    driver: str,
    layer_name: str,
    crs_wkt: str | None,
    names: list[str],
    metadata: dict[str, str] | None,
    count: int,
    geometry: tuple[str, list[str]],
) -> None:
    """The CSV ``table`` as a layer of ``geometry`` (a type and GDAL's CSV open options) at
    ``partial``, then read back: the layer must hold every feature (a write that failed half-way,
    as on a full disk, must not look complete)."""
    geometry_type, open_options = geometry
    options = gdal.VectorTranslateOptions(
        format=driver,
        layerName=layer_name,
        dstSRS=crs_wkt,
        srcSRS=crs_wkt,
        selectFields=names or None,
        geometryType=geometry_type,
    )
    # Not every failure raises: GDAL 3.13 goes on after a GeoPackage COMMIT failed on a full disk,
    # and closing (which may still write) only prints. Any failure GDAL reports fails the write.
    failures: list[str] = []

    def collect(level, _number, message):
        if level >= gdal.CE_Failure:
            failures.append(message)

    gdal.PushErrorHandler(collect)
    try:
        source = gdal.OpenEx(str(table), gdal.OF_VECTOR, open_options=open_options)
        result = gdal.VectorTranslate(str(partial), source, options=options)
        if result is None:
            raise RuntimeError("the layer could not be created")
        if metadata:
            result.GetLayer(0).SetMetadata(metadata)
        result.FlushCache()  # commits (GeoPackage) and raises on failure, where closing would only print it
        result = source = None
    finally:
        gdal.PopErrorHandler()
    if failures:
        raise RuntimeError("; ".join(dict.fromkeys(failures)))
    written = gdal.OpenEx(str(partial), gdal.OF_VECTOR)
    layer = written.GetLayerByName(layer_name) if written is not None else None
    if layer is None or layer.GetFeatureCount() != count:
        found = "no layer" if layer is None else f"{layer.GetFeatureCount()} of {count} features"
        raise RuntimeError(f"the file holds {found} after writing")


def _write_table(
    path: str | Path,
    layer_name: str,
    crs_wkt: str | None,
    geometry_columns: dict[str, tuple[list, str]],
    geometry: tuple[str, list[str]],
    fields: dict[str, tuple[list, str]],
    metadata: dict[str, str] | None,
    what: str,
) -> Path:
    """Features through a CSV that GDAL converts in C++ (no Python loop over features), into
    a new file written atomically; the format follows the suffix."""
    path = Path(path)
    driver = VECTOR_DRIVERS.get(path.suffix.lower())
    if driver is None:
        raise InputError(f"cannot write {what} to {path.name!r}: use one of {', '.join(VECTOR_DRIVERS)}")
    names = list(fields)
    columns = {**geometry_columns, **fields}
    count = len(next(iter(geometry_columns.values()))[0])
    tmp = scratch_dir(path.parent, "otbtf-features")
    try:
        table = Path(tmp) / "features.csv"
        with open(table, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(list(columns))
            writer.writerows(zip(*(list(values) for values, _ in columns.values()), strict=True))
        (Path(tmp) / "features.csvt").write_text(",".join(kind for _, kind in columns.values()))
        with atomic_output(path) as partial:
            try:
                _translate_table(table, partial, driver, layer_name, crs_wkt, names, metadata, count, geometry)
            except RuntimeError as err:  # GDAL's exceptions: a full disk, a read-only folder
                raise InputError(
                    f"could not write {path} ({str(err).strip() or 'GDAL failed'}). Is the disk full "
                    f"or the folder read-only? {unchanged(path)}"
                ) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


@gdal_exceptions
def write_points(
    path: str | Path,
    layer_name: str,
    crs_wkt: str | None,
    x: np.ndarray,
    y: np.ndarray,
    fields: dict[str, tuple[list, str]],
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write points and their attributes to a new vector file, atomically; the
    format follows the suffix (GeoPackage, SQLite, Shapefile, GeoJSON, FlatGeobuf).

    ``fields`` maps a name to ``(values, type)`` with type ``"String"``,
    ``"Integer64"`` or ``"Real"``.
    """
    return _write_table(
        path,
        layer_name,
        crs_wkt,
        {"x": (np.asarray(x).tolist(), "Real"), "y": (np.asarray(y).tolist(), "Real")},
        ("POINT", ["X_POSSIBLE_NAMES=x", "Y_POSSIBLE_NAMES=y", "KEEP_GEOM_COLUMNS=NO"]),
        fields,
        metadata,
        "points",
    )


@gdal_exceptions
def write_polygons(
    path: str | Path,
    layer_name: str,
    crs_wkt: str | None,
    wkt: list[str],
    fields: dict[str, tuple[list, str]],
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write polygons (WKT) and their attributes to a new vector file, as :func:`write_points`."""
    return _write_table(
        path,
        layer_name,
        crs_wkt,
        {"geometry_wkt": (list(wkt), "WKT")},
        ("POLYGON", ["GEOM_POSSIBLE_NAMES=geometry_wkt", "KEEP_GEOM_COLUMNS=NO"]),
        fields,
        metadata,
        "polygons",
    )
