"""Object detection with detectors whose objects are known by construction
(``onnx_models.grid_detector``: each 8 px cell of a tile proposes itself, scored by the
band's mean): bright 8 px squares on a dark raster are the objects, and the map rectangles
they must become are computed here by hand from the geotransform."""

import math

import numpy as np
import pytest
import rasterio
from onnx_models import grid_detector, save
from osgeo import ogr

from otbtf_plugin.detection import DetectOptions, detect
from otbtf_plugin.detection.decoding import Candidates, suppress
from otbtf_plugin.errors import InputError
from otbtf_plugin.grid import overlapping_tiles
from otbtf_plugin.models.served import ModelError

pytest.importorskip("onnxruntime")

X0, Y0, RES = 500000.0, 4000000.0, 0.5
# (band, col, row) of each 8 px square: the first crosses the seam of the tiles starting at
# columns 0 and 48 (both see it whole), the second lies in four tiles, the third is class 1.
SQUARES = [(0, 56, 16), (0, 120, 104), (1, 8, 152)]


def scene(path, value=255, nodata=None, others=0):
    """The squares at ``value`` in their band (``others`` in the other bands) on 0."""
    pixels = np.zeros((3, 168, 200), np.uint8)
    for band, col, row in SQUARES:
        pixels[:, row : row + 8, col : col + 8] = others
        pixels[band, row : row + 8, col : col + 8] = value
    profile = {"driver": "GTiff", "width": 200, "height": 168, "count": 3, "dtype": "uint8", "crs": "EPSG:32631"}
    profile["transform"] = rasterio.Affine(RES, 0, X0, 0, -RES, Y0)
    with rasterio.open(path, "w", nodata=nodata, **profile) as dst:
        dst.write(pixels)
    return path


def rectangle(col, row, size=8):
    """(xmin, xmax, ymin, ymax) of the square whose top-left pixel is (col, row)."""
    return (X0 + col * RES, X0 + (col + size) * RES, Y0 - (row + size) * RES, Y0 - row * RES)


def objects(path):
    """(class, class_id, confidence, envelope, area, points) of every feature, sorted."""
    source = ogr.Open(str(path))
    layer = source.GetLayer(0)
    found = []
    for feature in layer:
        geometry = feature.GetGeometryRef()
        ring = geometry.GetGeometryRef(0)
        found.append(
            (
                feature.GetField("class"),
                feature.GetField("class_id"),
                feature.GetField("confidence"),
                tuple(round(v, 6) for v in geometry.GetEnvelope()),
                geometry.GetArea(),
                [ring.GetPoint_2D(k) for k in range(ring.GetPointCount())],
            )
        )
    return sorted(found, key=lambda f: (f[1], f[3]))


def metadata(layout, classes=2, **more):
    return {
        "model_type": "Detector",
        "det_type": layout,
        "class_names": {str(k): name for k, name in enumerate(["car", "tree"][:classes])},
        "tiles_overlap": 25,  # of 64 px: 16 px
        **more,
    }


@pytest.mark.parametrize("layout", ["YOLO_Ultralytics", "YOLO_v9", "YOLO_v5_or_v7_default", "YOLO_v6"])
def test_boxes_are_the_objects_rectangles_once_whatever_the_tiles(tmp_path, layout):
    model = save(
        grid_detector(layout=layout, classes=2, objectness=0.01 if layout == "YOLO_v6" else None),
        tmp_path / "det.onnx",
        metadata(layout),
    )
    assert [w.col_off for w in overlapping_tiles(200, 168, 64, 16)[:4]] == [0, 48, 96, 136]
    result = detect(scene(tmp_path / "scene.tif"), model, tmp_path / "objects.gpkg")
    expected = sorted(
        [(["car", "tree"][b], b, 1.0, tuple(round(v, 6) for v in rectangle(c, r))) for b, c, r in SQUARES],
        key=lambda f: (f[1], f[3]),
    )
    assert [f[:4] for f in objects(tmp_path / "objects.gpkg")] == expected
    assert (result.objects, result.tiles) == (3, 16)


def test_the_layer_is_in_the_rasters_crs_with_the_documented_fields(tmp_path):
    model = save(grid_detector(), tmp_path / "det.onnx", metadata("YOLO_Ultralytics", classes=1))
    detect(scene(tmp_path / "scene.tif"), model, tmp_path / "objects.gpkg")
    source = ogr.Open(str(tmp_path / "objects.gpkg"))  # kept: its layer dies with it
    layer = source.GetLayer(0)
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "32631"
    definition = layer.GetLayerDefn()
    fields = {definition.GetFieldDefn(k).GetName(): definition.GetFieldDefn(k).GetTypeName() for k in range(3)}
    assert fields == {"class": "String", "class_id": "Integer64", "confidence": "Real"}
    assert ogr.GeometryTypeToName(layer.GetGeomType()) == "Polygon"


def test_an_oriented_box_is_the_turned_rectangle(tmp_path):
    layout = "YOLO_Ultralytics_obb"
    model = save(grid_detector(layout=layout, angle=0.3), tmp_path / "det.onnx", metadata(layout, classes=1))
    detect(scene(tmp_path / "scene.tif"), model, tmp_path / "objects.gpkg")
    found = objects(tmp_path / "objects.gpkg")
    assert len(found) == 2  # the class-1 square is in band 2: this detector reads band 1 only
    _, _, _, _, area, points = found[0]
    col, row = SQUARES[0][1] + 4, SQUARES[0][2] + 4  # the square's centre, in pixel corner coordinates
    cos, sin = math.cos(0.3), math.sin(0.3)
    corner = (X0 + (col + 4 * cos - 4 * sin) * RES, Y0 - (row + 4 * sin + 4 * cos) * RES)  # (+w/2, +h/2) turned
    assert points[0] == pytest.approx(corner, abs=1e-6)
    assert area == pytest.approx(64 * RES * RES)


def test_an_instance_mask_is_its_outline(tmp_path):
    layout = "YOLO_Ultralytics_segmentation"
    model = save(grid_detector(layout=layout), tmp_path / "det.onnx", metadata(layout, classes=1))
    detect(scene(tmp_path / "scene.tif"), model, tmp_path / "objects.gpkg")
    found = objects(tmp_path / "objects.gpkg")
    assert [f[3] for f in found] == sorted(tuple(round(v, 6) for v in rectangle(c, r)) for b, c, r in SQUARES[:2])
    # enlarged bilinearly from prototypes 4 times coarser, the mask loses corner pixels (0.625 x
    # 0.625 < 0.5 there), as Deepness' and Ultralytics' masks do; where the square touches the
    # tile's edge the prototypes are extended and the corners stay: 62 of the 64 pixels, as
    # scipy.ndimage.zoom(order=1, grid_mode=True, mode="nearest") of the same prototypes gives
    assert [f[4] for f in found] == pytest.approx([62 * RES * RES] * 2)


def test_the_thresholds_the_models_and_overridden(tmp_path):
    source = scene(tmp_path / "scene.tif", value=128)  # score 128 / 255 = 0.502
    strict = save(grid_detector(), tmp_path / "strict.onnx", metadata("YOLO_Ultralytics", 1, det_conf=0.6))
    assert detect(source, strict, tmp_path / "none.gpkg").objects == 0
    assert objects(tmp_path / "none.gpkg") == []  # an empty layer, written all the same
    assert detect(source, strict, tmp_path / "some.gpkg", DetectOptions(confidence=0.4)).objects == 2


def test_suppression_keeps_the_best_of_each_class_above_the_iou():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float64)
    found = Candidates(boxes, np.array([0.8, 0.9, 0.7, 0.6]), np.array([0, 0, 1, 0]))
    assert suppress(found, 0.5).tolist() == [1, 2, 3]  # box 0 overlaps box 1 by 9/11 = 0.82
    assert suppress(found, 0.85).tolist() == [0, 1, 2, 3]


def greedy_reference(boxes, scores, classes, iou):
    """Non-maximum suppression as textbooks write it: every pair compared, best score first."""
    order = sorted(range(len(scores)), key=lambda k: (-scores[k], k))
    kept = []
    for k in order:
        a = boxes[k]
        clash = False
        for m in kept:
            b = boxes[m]
            if classes[m] != classes[k]:
                continue
            w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
            if union > 0 and w * h / union > iou:
                clash = True
                break
        if not clash:
            kept.append(k)
    return sorted(kept)


@pytest.mark.parametrize("seed", range(6))
def test_suppression_equals_the_pairwise_greedy_reference(seed):
    """Boxes of sizes from 1 to 40 px, crowded, three classes: the grid-hashed suppression keeps
    exactly what comparing every pair keeps."""
    rng = np.random.default_rng(seed)
    n = 400
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(1, 40, (n, 2)) * (rng.uniform(size=(n, 1)) < 0.9) + rng.uniform(1, 3, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.choice(np.linspace(0.1, 1, 50), n)  # ties on purpose
    classes = rng.integers(0, 3, n)
    for iou in (0.0, 0.3, 0.7):
        got = suppress(Candidates(boxes, scores, classes), iou).tolist()
        assert got == greedy_reference(boxes, scores, classes, iou), iou


def test_empty_and_nodata_tiles_are_skipped(tmp_path):
    model = save(grid_detector(), tmp_path / "det.onnx", metadata("YOLO_Ultralytics", classes=1))
    source = scene(tmp_path / "scene.tif", nodata=0, others=1)  # 0 in every band: nodata
    result = detect(source, model, tmp_path / "objects.gpkg")
    assert result.objects == 2 and result.skipped_tiles == 16 - 7  # 7 tiles hold a square
    detect(scene(tmp_path / "plain.tif", others=1), model, tmp_path / "plain.gpkg")
    assert objects(tmp_path / "objects.gpkg") == objects(tmp_path / "plain.gpkg")


def test_an_output_that_is_no_vector_file_is_refused_before_any_work(tmp_path):
    model = save(grid_detector(), tmp_path / "det.onnx", metadata("YOLO_Ultralytics", classes=1))
    with pytest.raises(InputError, match=r"^OUTPUT 'objects.tif': objects are written as a vector file; .*\.gpkg"):
        detect(scene(tmp_path / "scene.tif"), model, tmp_path / "objects.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.onnx", "scene.tif"]


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"model_type": "Detector"}, r"^det.onnx: a Deepness detector needs the metadata det_type"),
        (metadata("YOLO_v12"), r"^det.onnx: unknown det_type 'YOLO_v12'; known: YOLO_v5_or_v7_default"),
        (metadata("YOLO_Ultralytics", classes=2), r"^det.onnx: class_names names 2 classes but its output holds 1"),
        ({"model_type": "Segmentor"}, r"^det.onnx is a Deepness Segmentor model: object detection needs a detector"),
        (metadata("YOLO_v5_or_v7_default", 1), r"^det.onnx: class_names names 1 classes but its output holds 59"),
    ],
)
def test_bad_detectors_are_refused_in_one_sentence_and_nothing_is_written(tmp_path, meta, message):
    model = save(grid_detector(), tmp_path / "det.onnx", meta)
    with pytest.raises(ModelError, match=message):
        detect(scene(tmp_path / "scene.tif"), model, tmp_path / "objects.gpkg")
    assert not (tmp_path / "objects.gpkg").exists()


def test_a_raster_smaller_than_a_tile_is_read_padded(tmp_path):
    """40 x 32 px under a 64 px detector: one tile, past the raster's edge filled with 0 (as
    Deepness pads), the square where it is."""
    pixels = np.zeros((3, 32, 40), np.uint8)
    pixels[0, 8:16, 24:32] = 255
    profile = {"driver": "GTiff", "width": 40, "height": 32, "count": 3, "dtype": "uint8", "crs": "EPSG:32631"}
    with rasterio.open(
        tmp_path / "small.tif", "w", transform=rasterio.Affine(RES, 0, X0, 0, -RES, Y0), **profile
    ) as dst:
        dst.write(pixels)
    model = save(grid_detector(), tmp_path / "det.onnx", metadata("YOLO_Ultralytics", classes=1))
    result = detect(tmp_path / "small.tif", model, tmp_path / "objects.gpkg")
    assert (result.tiles, result.objects) == (1, 1)
    assert objects(tmp_path / "objects.gpkg")[0][3] == tuple(round(v, 6) for v in rectangle(24, 8))


def test_objects_beyond_the_memory_budget_stop_the_run_with_what_would_work(tmp_path):
    """A confidence threshold below every cell's score on a 1200 x 1200 px raster of 1s: each 8 px
    cell is an object (about 25,000); with MEMORY_MB 1, keeping them would pass a quarter of the
    budget: one sentence, nothing written."""
    source = tmp_path / "ones.tif"
    profile = {"driver": "GTiff", "width": 1200, "height": 1200, "count": 3, "dtype": "uint8", "crs": "EPSG:32631"}
    with rasterio.open(source, "w", transform=rasterio.Affine(RES, 0, X0, 0, -RES, Y0), **profile) as dst:
        dst.write(np.ones((3, 1200, 1200), np.uint8))
    model = save(grid_detector(), tmp_path / "det.onnx", metadata("YOLO_Ultralytics", classes=1))
    options = DetectOptions(confidence=0.001, memory_mb=1)
    with pytest.raises(InputError, match=r"^more than \d+ objects score at least 0.001 .* raise CONFIDENCE"):
        detect(source, model, tmp_path / "objects.gpkg", options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.onnx", "ones.tif"]
    assert detect(source, model, tmp_path / "objects.gpkg", DetectOptions(confidence=0.001)).objects == 150 * 150


def test_cancel_leaves_nothing(tmp_path):
    from otbtf_plugin.errors import Cancelled

    class CancelAfterTwoTiles:
        def __init__(self):
            self.steps = 0

        def step(self, done, total):
            self.steps = done

        def cancelled(self):
            return self.steps >= 2

        def info(self, message):
            pass

        def warn(self, message):
            pass

    model = save(grid_detector(), tmp_path / "det.onnx", metadata("YOLO_Ultralytics", classes=1))
    source = scene(tmp_path / "scene.tif")
    with pytest.raises(Cancelled):
        detect(source, model, tmp_path / "objects.gpkg", progress=CancelAfterTwoTiles())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.onnx", "scene.tif"]


def test_a_detector_made_for_other_pixels_gets_the_segmentors_warning(tmp_path):
    """resolution 10 cm for a raster of 50 cm pixels: the same line as serving's (resample)."""
    warnings = []

    class Log:
        def step(self, done, total):
            pass

        def cancelled(self):
            return False

        def info(self, message):
            pass

        def warn(self, message):
            warnings.append(message)

    model = save(grid_detector(), tmp_path / "det.onnx", metadata("YOLO_Ultralytics", 1, resolution=10))
    detect(scene(tmp_path / "scene.tif"), model, tmp_path / "objects.gpkg", progress=Log())
    assert warnings == [
        "the model was made for 10 cm pixels and source 1 has 50 cm pixels; resample it to 0.1 m "
        "(Raster > Projections > Warp, or gdalwarp -tr) or expect a poor map"
    ]


def test_tiles_a_file_asks_for_count_against_memory_mb(tmp_path):
    """A detector of 1024 px tiles (its file says so) under MEMORY_MB 32: its tiles (3 bands as
    read and as float32, the scores) need more; one sentence with the budget that would work,
    before any work, nothing written."""
    model = save(grid_detector(tile=1024), tmp_path / "det.onnx", metadata("YOLO_Ultralytics", classes=1))
    options = DetectOptions(memory_mb=32)
    with pytest.raises(
        InputError, match=r"^the detector's 1024 px tiles need about \d+ MiB .* give MEMORY_MB \d+ or more"
    ):
        detect(scene(tmp_path / "scene.tif"), model, tmp_path / "objects.gpkg", options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.onnx", "scene.tif"]
