"""Ground truth as training samples: polygons go through sample selection (its strategies,
nodata and CRS rules) on source 1; points are used as they are. Every sample remembers its
polygon (``originfid`` of our sample points, else the feature itself), so that validation
can hold out whole polygons."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .features import FeatureSpec
from .progress import NullProgress, Progress
from .raster import crs_wkt, open_raster
from .selection import Strategy, sample_selection
from .vector import origins, read_features, transform_xy


@dataclass
class TrainingSamples:
    x: np.ndarray  # in source 1's CRS
    y: np.ndarray
    codes: np.ndarray
    groups: np.ndarray  # polygon (or point) each sample comes from
    class_names: dict[int, str]
    messages: list[str] = field(default_factory=list)


def training_samples(
    spec: FeatureSpec,
    vector,
    field_name: str,
    strategy: Strategy = "smallest",
    value: float | None = None,
    seed: int = 0,
    layer: str | None = None,
    progress: Progress | None = None,
) -> TrainingSamples:
    """Sample positions and classes from polygons (sample selection on source 1) or points."""
    progress = progress or NullProgress()
    feats = read_features(vector, field_name, None, layer)
    if not len(feats.fids):
        raise InputError(f"the vector {str(vector)!r} has no feature with a class in field {field_name!r}")
    if feats.geometry_types() - {"Point"}:
        samples = sample_selection(
            spec.sources[0].path,
            vector,
            field_name,
            nodata=spec.sources[0].nodata,
            strategy=strategy,
            value=value,
            seed=seed,
            layer=layer,
            progress=progress,
        )
        return TrainingSamples(
            samples.x, samples.y, samples.codes, samples.fids, samples.class_names, list(samples.warnings)
        )
    with open_raster(spec.sources[0].path) as ds:
        x, y = transform_xy(feats.point_x, feats.point_y, feats.crs_wkt, crs_wkt(ds))
    fid = feats.fids[feats.point_feature]
    origin = origins(vector, fid, layer)
    groups = fid if origin is None else origin
    return TrainingSamples(np.asarray(x), np.asarray(y), feats.codes[feats.point_feature], groups, feats.class_names)
