"""Classical classifiers on features: parameters, safe files, the split by polygon,
raw-band and deep features against independent computations, image classification
against scikit-learn on the pixels, recipes that do not match."""

import json
import os
import pickle  # nosec B403: the test writes a hostile pickle and checks it is never loaded

import numpy as np
import pytest
import rasterio
from osgeo import ogr
from reference import split_polygons

from common import POLYGONS, RGB, CancelAfter, Log

pytest.importorskip("sklearn")

from otbtf_plugin import classifier_training as dc
from otbtf_plugin import classifiers
from otbtf_plugin import image_classification as ic
from otbtf_plugin.errors import Cancelled, InputError
from otbtf_plugin.features import FeatureSource, FeatureSpec

B2_30 = RGB.parent / "LC08_224077_20200518_B2_30m_crop.tif"
B2_60 = RGB.parent / "LC08_224077_20200518_B2_60m_crop.tif"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return split_polygons(tmp_path_factory.mktemp("parts") / "parts.gpkg")


@pytest.fixture(scope="module")
def forest(parts, tmp_path_factory):
    out = tmp_path_factory.mktemp("forest")
    spec = FeatureSpec([FeatureSource(RGB)])
    result = dc.train_from_features(
        spec, parts, "name", out / "rf.skops", out / "report.html", classifier="rf", strategy="all", seed=3
    )
    return result, spec, out


def test_parameters_are_parsed_and_checked():
    assert classifiers.parse_params("n_estimators=200; max_depth=None;criterion=gini;x=(64, 32);b=true") == {
        "n_estimators": 200,
        "max_depth": None,
        "criterion": "gini",
        "x": (64, 32),
        "b": True,
    }
    rf = classifiers.make_classifier("rf", "n_estimators=7;max_depth=3", seed=1)
    assert (rf.n_estimators, rf.max_depth, rf.random_state) == (7, 3, 1)
    with pytest.raises(InputError, match=r"n_trees is not a parameter of rf .*n_estimators"):
        classifiers.make_classifier("rf", "n_trees=10")
    with pytest.raises(InputError, match="n_estimators"):
        classifiers.make_classifier("rf", "n_estimators=-3")
    with pytest.raises(InputError, match="is not of the form name=value"):
        classifiers.make_classifier("rf", "n_estimators")
    with pytest.raises(InputError, match="use one of: rf, svm, boost, dt, gbt, bayes, knn, ann"):
        classifiers.make_classifier("forest")
    svm = classifiers.make_classifier("svm", "C=10")
    assert svm.steps[0][0] == "standardscaler" and svm.steps[1][1].estimator.C == 10


@pytest.mark.parametrize("name", classifiers.CLASSIFIER_NAMES)
def test_every_classifier_round_trips_through_its_file(name, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 4)).astype(np.float32)
    codes = np.where(x[:, 0] > 0, 3, 7) + (x[:, 1] > 0)
    groups = np.arange(len(codes)) // 10
    trained = classifiers.train(
        x, codes, groups, {3: "a", 4: "b", 7: "c", 8: "d"}, {"features": list("wxyz")}, classifier=name, seed=0
    )
    assert trained.metrics["samples"] == trained.validation_samples > 0
    path = classifiers.save(trained, tmp_path / f"{name}.skops")
    loaded = classifiers.load(path)
    # One thread: scikit-learn's threads sum a forest's trees in the order they finish, which
    # changes the last bits of probabilities that are fractions (depth-limited trees).
    assert np.array_equal(
        classifiers.single_threaded(loaded.estimator).predict_proba(x),
        classifiers.single_threaded(trained.estimator).predict_proba(x),
    )
    assert loaded.classes == trained.classes and loaded.recipe == {"features": list("wxyz")}
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.skops"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"recipe": "features"}, r"its header's 'recipe' should be an object, found str"),
        ({"classes": None}, r"its header's 'classes' should list \{\"code\": a whole number from -2147483648"),
        ({"classes": [{"code": "one", "name": "a"}]}, r"its header's 'classes' should list"),
        ({"classes": [{"code": 2**40, "name": "a"}]}, r"its header's 'classes' should list"),
        ({"classifier": 3}, r"its header's 'classifier' should be text, found int"),
    ],
)
def test_a_classifier_file_with_a_malformed_header_is_one_line(tmp_path, change, message):
    import json

    import skops.io

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2)).astype(np.float32)
    codes = np.where(x[:, 0] > 0, 1, 2)
    trained = classifiers.train(
        x, codes, np.arange(60) // 5, {1: "a", 2: "b"}, {"features": ["p", "q"]}, classifier="dt", seed=0
    )
    header = {
        "format": "otbtf-classifier",
        "version": 1,
        "classifier": "dt",
        "params": {},
        "classes": trained.classes,
        "recipe": trained.recipe,
        "metrics": None,
        **change,
    }
    path = tmp_path / "edited.skops"
    skops.io.dump({"otbtf": json.dumps(header), "estimator": trained.estimator}, path)
    with pytest.raises(InputError, match=rf"^edited.skops: {message}") as err:
        classifiers.load(path)
    assert "\n" not in str(err.value)


def test_a_hostile_classifier_file_is_refused_without_running_anything(tmp_path):
    import skops.io

    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.skops"
    skops.io.dump({"otbtf": "{}", "estimator": os.system}, hostile)
    with pytest.raises(InputError, match=r"types .*system.*refused without loading"):
        classifiers.load(hostile)

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    pickled = tmp_path / "pickled.skops"
    pickled.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(InputError, match="is not a classifier file"):
        classifiers.load(pickled)
    assert not marker.exists()


def test_validation_holds_out_whole_polygons():
    codes = np.repeat([1, 1, 1, 2, 2, 3], 10)
    groups = np.repeat([10, 11, 12, 20, 21, 30], 10)
    held, warnings = classifiers.split_by_group(codes, groups, 0.3, seed=0, names={3: "water"})
    for g in np.unique(groups):
        assert len(set(held[groups == g])) == 1  # a polygon is all in or all out
    assert held[codes == 1].sum() == 10 and held[codes == 2].sum() == 10 and not held[codes == 3].any()
    assert warnings == [
        "classes 1, 2: one polygon each held out; their scores rest on those areas alone (give more polygons of "
        "these classes)",
        "class water comes from one polygon only: none of it is held out, the report cannot assess that class",
    ]
    with pytest.raises(InputError, match="VALIDATION=30"):
        classifiers.split_by_group(codes, groups, 30, 0)


def test_raw_band_features_are_the_pixel_values_of_every_source(tmp_path):
    """30 m and 60 m sources: the 60 m feature is the pixel that contains the 30 m pixel."""
    spec = FeatureSpec([FeatureSource(B2_30), FeatureSource(B2_60)])
    with rasterio.open(B2_30) as a, rasterio.open(B2_60) as b:
        full30, full60 = a.read(1), b.read(1)
        rows, cols = np.array([0, 5, 17, 233, 399]), np.array([0, 8, 101, 3, 399])
        x, y = a.xy(rows, cols)
        inverse = ~b.transform
        assert inverse.b == inverse.d == 0
        col60, row60 = np.asarray(x) * inverse.a + inverse.c, np.asarray(y) * inverse.e + inverse.f  # north-up
    from contextlib import ExitStack

    from otbtf_plugin.features import open_features

    with ExitStack() as stack:
        opened = open_features(spec, stack)
        values, ok, rejected = opened.values_at(np.asarray(x), np.asarray(y))
        assert opened.recipe["features"] == ["source1_band1", "source2_band1"]
    assert ok.all() and not rejected
    assert np.array_equal(values[:, 0], full30[rows, cols])
    assert np.array_equal(values[:, 1], full60[np.floor(row60).astype(int), np.floor(col60).astype(int)])


def test_report_holds_out_whole_polygons_and_scores_them(forest):
    result, _, out = forest
    report = json.loads((out / "report.json").read_text())
    metrics = result.trained.metrics
    assert report["validation"] == metrics
    assert metrics["samples"] == result.trained.validation_samples > 0
    # Every pixel (OTB's count) scored or trained on; the file's forest is refit on all of them.
    assert result.trained.refit and result.trained.training_samples == 683
    assert sum(sum(row) for row in metrics["confusion_matrix"]) == metrics["samples"]
    assert metrics["overall_accuracy"] > 0.9  # four land covers, easy to separate on raw bands
    assert "Overall accuracy" in (out / "report.html").read_text()


def test_class_map_equals_the_classifier_on_every_pixel(forest, tmp_path):
    """The streamed class map and confidence against scikit-learn applied to the whole
    image's pixel table at once."""
    result, spec, _ = forest
    mask = tmp_path / "mask.tif"
    with rasterio.open(RGB) as src:
        pixels = src.read().reshape(src.count, -1).T.astype(np.float32)
        profile = dict(src.profile, count=1, dtype="uint8", nodata=None)
        keep = np.zeros((src.height, src.width), dtype="uint8")
        keep[:, : src.width // 2] = 1
        with rasterio.open(mask, "w", **profile) as m:
            m.write(keep, 1)
    done = ic.classify_image(spec, out_skops(forest), tmp_path / "map.tif", tmp_path / "conf.tif", mask=mask)
    estimator = result.trained.estimator
    probabilities = estimator.predict_proba(pixels)
    expected = estimator.classes_[probabilities.argmax(axis=1)].reshape(keep.shape)
    with rasterio.open(done.output) as cm, rasterio.open(done.confidence) as cf:
        classes, confidence = cm.read(1), cf.read(1)
        assert cm.dtypes[0] == "uint8" and cm.nodata == 0  # codes 1..4
        assert cm.transform == rasterio.open(RGB).transform
    inside = keep == 1
    assert np.array_equal(classes[inside], expected[inside])
    assert (classes[~inside] == 0).all() and (confidence[~inside] == -1).all()
    assert np.allclose(confidence[inside], probabilities.max(axis=1).reshape(keep.shape)[inside])
    assert done.style.read_text().count("paletteEntry") == 4
    # Without confidence the forest may stop a pixel's trees early: the same classes.
    classes_only = ic.classify_image(spec, out_skops(forest), tmp_path / "classes.tif", mask=mask)
    with rasterio.open(classes_only.output) as cm:
        assert np.array_equal(cm.read(1), classes)


def out_skops(forest):
    return forest[2] / "rf.skops"


def test_a_classifier_refuses_inputs_that_differ_from_its_training(forest, tmp_path):
    with pytest.raises(InputError, match=r"source 1 had 3 band\(s\) at training; the one given has 1"):
        ic.classify_image(FeatureSpec([FeatureSource(B2_30)]), out_skops(forest), tmp_path / "x.tif")
    with pytest.raises(InputError, match=r"1 source\(s\) at training; 2 given"):
        ic.classify_image(FeatureSpec([FeatureSource(RGB), FeatureSource(RGB)]), out_skops(forest), tmp_path / "x.tif")
    assert not list(tmp_path.iterdir())


def test_cancel_leaves_no_class_map(forest, tmp_path):
    with pytest.raises(Cancelled):
        ic.classify_image(
            forest[1], out_skops(forest), tmp_path / "map.tif", tmp_path / "conf.tif", progress=CancelAfter(2)
        )
    assert not list(tmp_path.iterdir())


def test_sample_extraction_then_vector_classifier(parts, tmp_path):
    """Points from sample selection -> features as fields -> trainvectorclassifier: the
    fields hold the pixel values, the recipe travels with them, and the classifier
    trained from fields classifies images like one trained from the image."""
    from otbtf_plugin.selection import sample_selection

    samples = sample_selection(RGB, parts, "name", strategy="constant", value=30, seed=1)
    points = samples.write_gpkg(tmp_path / "points.gpkg")
    spec = FeatureSpec([FeatureSource(RGB)])
    path, count, rejected = dc.sample_extraction(spec, points, tmp_path / "features.gpkg", "name")
    assert count == len(samples) and not rejected
    dataset = ogr.Open(str(path))  # keep: the layer dies with its dataset
    layer = dataset.GetLayer(0)
    with rasterio.open(RGB) as src:
        image = src.read()
    for feature, col, row, code in zip(layer, samples.cols, samples.rows, samples.codes, strict=True):
        assert [feature.GetField(f"source1_band{b}") for b in (1, 2, 3)] == image[:, row, col].tolist()
        assert feature.GetField("name") == samples.class_names[int(code)]
    fields = [f"source1_band{b}" for b in (1, 2, 3)]
    result = dc.train_vector_classifier(path, fields, "name", tmp_path / "v.skops", tmp_path / "v.html", seed=2)
    assert result.trained.validation_samples > 0 and result.trained.metrics["overall_accuracy"] > 0.9
    done = ic.classify_image(spec, result.classifier, tmp_path / "map.tif")
    with rasterio.open(done.output) as cm:
        assert (
            cm.read(1)[samples.rows, samples.cols].tolist()
            == result.trained.estimator.predict(image[:, samples.rows, samples.cols].T.astype(np.float32)).tolist()
        )
    with pytest.raises(InputError, match="no field 'nir'; its numeric fields: originfid, source1_band1"):
        dc.train_vector_classifier(path, ["nir"], "name", tmp_path / "w.skops")


def test_class_map_type():
    assert ic.class_map_type([1, 2, 3]) == ("uint8", 0)
    assert ic.class_map_type([0, 1, 2]) == ("uint8", 255)
    assert ic.class_map_type([0, 255]) == ("uint16", 65535)
    assert ic.class_map_type([-1, 5]) == ("int16", -32768)


def test_deep_features_of_a_trained_model_end_to_end(parts, tmp_path):
    """Train the cnn on patches, take its inner layer ("features") as features: values at
    points equal the SavedModel run on the patches read independently; a forest trained
    on them classifies a crop, and the class map agrees with the forest on those features."""
    tf = pytest.importorskip("tensorflow")
    from contextlib import ExitStack

    from otbtf_plugin.extraction import PatchSource, extract_patches
    from otbtf_plugin.features import open_features
    from otbtf_plugin.selection import sample_selection
    from otbtf_plugin.training import TrainConfig, train

    samples = sample_selection(RGB, POLYGONS, "name", strategy="constant", value=40, seed=0)
    points = samples.write_gpkg(tmp_path / "points.gpkg")
    extract_patches([PatchSource(RGB, 16)], points, [tmp_path / "p.tif"], "name", labels_output=tmp_path / "y.tif")
    train(TrainConfig([tmp_path / "p.tif"], tmp_path / "y.tif", tmp_path / "model", epochs=1, batch_size=32, seed=0))
    spec = FeatureSpec([FeatureSource(RGB)], model=tmp_path / "model", output_names=["features"])

    with rasterio.open(RGB) as src:
        rows, cols = np.array([8, 100, 500, 1131]), np.array([8, 300, 20, 791])
        x, y = src.xy(rows, cols)
        patches = np.stack(
            [
                src.read(window=((r - 8, r + 8), (c - 8, c + 8))).transpose(1, 2, 0)
                for r, c in zip(rows, cols, strict=True)
            ]
        ).astype(np.float32)
    function = tf.saved_model.load(str(tmp_path / "model" / "savedmodel")).signatures["serving_default"]
    expected = function(**{function.structured_input_signature[1].popitem()[0]: tf.constant(patches)})["features"]
    with ExitStack() as stack:
        opened = open_features(spec, stack)
        values, ok, _ = opened.values_at(np.asarray(x), np.asarray(y))
        assert opened.recipe["features"] == [f"features_{k}" for k in range(64)]
        assert opened.recipe["model"]["name"] == "model"
    assert ok.all() and np.allclose(values, expected.numpy(), rtol=1e-5, atol=1e-5)

    result = dc.train_from_features(spec, parts, "name", tmp_path / "deep.skops", strategy="constant", value=25)
    assert result.trained.metrics is not None and len(result.trained.recipe["features"]) == 64
    crop = tmp_path / "crop.tif"
    with rasterio.open(RGB) as src:
        window = rasterio.windows.Window(250, 300, 48, 40)
        profile = dict(src.profile, width=48, height=40, transform=src.window_transform(window))
        with rasterio.open(crop, "w", **profile) as dst:
            dst.write(src.read(window=window))
    done = ic.classify_image(
        FeatureSpec([FeatureSource(crop)], tmp_path / "model", ["features"]),
        result.classifier,
        tmp_path / "deep_map.tif",
    )
    with rasterio.open(done.output) as cm, rasterio.open(crop) as src:
        classes = cm.read(1)
        assert (cm.width, cm.height) == (48 - 15, 40 - 15)  # the receptive field of 16 px fits inside
        r, c = np.array([0, 7, 24]), np.array([0, 20, 32])
        x, y = cm.xy(r, c)
        spec_crop = FeatureSpec([FeatureSource(crop)], tmp_path / "model", ["features"])
        with ExitStack() as stack:
            feats, ok, _ = open_features(spec_crop, stack).values_at(np.asarray(x), np.asarray(y))
    assert ok.all() and classes[r, c].tolist() == result.trained.estimator.predict(feats).tolist()
    with pytest.raises(InputError, match="features came from model 'model' at training; now from the bands"):
        ic.classify_image(FeatureSpec([FeatureSource(crop)]), result.classifier, tmp_path / "x.tif")


def test_sources_swapped_between_training_and_classification_are_named(tmp_path, parts):
    """Two one-band sources (30 m and 60 m) trained in one order, given in the other: both have
    one band, so only their grids tell them apart. Another 30 m raster is accepted with a warning."""
    spec = FeatureSpec([FeatureSource(B2_30), FeatureSource(B2_60)])
    with rasterio.open(B2_30) as src:
        x, y = src.xy(np.arange(0, 400, 7), np.arange(0, 400, 7))
    codes = (np.arange(len(x)) % 2) + 1
    points = tmp_path / "points.gpkg"
    from otbtf_plugin.vector import write_points

    with rasterio.open(B2_30) as src:
        write_points(
            points,
            "p",
            src.crs.to_wkt(),
            np.asarray(x),
            np.asarray(y),
            {"label": ([int(c) for c in codes], "Integer64")},
        )
    trained = dc.train_from_features(
        spec, points, "label", tmp_path / "two.skops", classifier="dt", strategy="all", validation=0
    )
    swapped = FeatureSpec([FeatureSource(B2_60), FeatureSource(B2_30)])
    with pytest.raises(
        InputError,
        match=r"the sources seem swapped \(source 1 is 60 x 60, source 2 is 30 x 30\): "
        r"give them in the training order, SOURCE1 = the 30 x 30 raster "
        r"\(LC08_224077_20200518_B2_30m_crop.tif at training\), "
        r"SOURCE2 = the 60 x 60",
    ):
        ic.classify_image(swapped, trained.classifier, tmp_path / "map.tif")
    assert not (tmp_path / "map.tif").exists()
    log = Log()
    ic.classify_image(
        FeatureSpec([FeatureSource(B2_30), FeatureSource(B2_30)]),
        trained.classifier,
        tmp_path / "map.tif",
        progress=log,
    )
    assert any(
        line.startswith("warning: source 2 has pixels of 30 x 30; the classifier was trained on 60 x 60")
        for line in log.lines
    ), log.lines


def test_extracted_samples_keep_the_polygon_they_come_from(tmp_path):
    """Sample extraction of sample-selection points writes each point's polygon as originfid,
    so that training on the extracted features holds out whole polygons (a point's own fid
    would make every sample its own group: a random split that flatters the report)."""
    from otbtf_plugin.selection import sample_selection

    points = sample_selection(RGB, POLYGONS, "name", strategy="constant", value=30).write_gpkg(tmp_path / "p.gpkg")
    dataset = ogr.Open(str(points))  # kept while its layer is read
    expected = {f.GetFID(): f.GetField("originfid") for f in dataset.GetLayer(0)}
    features, written, _ = dc.sample_extraction(FeatureSpec([FeatureSource(RGB)]), points, tmp_path / "f.gpkg", "name")
    dataset = ogr.Open(str(features))
    got = [f.GetField("originfid") for f in dataset.GetLayer(0)]
    assert written == 120 and got == list(expected.values())
    assert sorted(set(got)) == [1, 2, 3, 4]


def _nc_samples():
    """Features (5 bands) of a third of the North Carolina polygon pixels, their classes and polygons."""
    from common import NC_IMAGE, NC_POLYGONS
    from otbtf_plugin.selection import sample_selection

    selected = sample_selection(NC_IMAGE, NC_POLYGONS, "id", strategy="percent", value=0.35, seed=1)
    with rasterio.open(NC_IMAGE) as ds:
        values = np.array(list(ds.sample(zip(selected.x, selected.y, strict=True))), dtype=np.float32)
    return values, selected.codes, selected.fids


def test_auto_parameters_are_searched_by_polygon_deterministically():
    from otbtf_plugin.classifiers.search import GRIDS, MARGIN

    values, codes, groups = _nc_samples()
    first = classifiers.train(values, codes, groups, {}, {}, "knn", "auto", seed=3, validation=0.3)
    again = classifiers.train(values, codes, groups, {}, {}, "knn", "auto", seed=3, validation=0.3)
    assert first.search == again.search and first.params == again.params
    candidates = first.search["candidates"]
    assert len(candidates) == len(GRIDS["knn"]) and first.search["folds"] == 4
    assert {k: repr(v) for k, v in first.params.items()} == first.search["chosen"]
    chosen = next(c for c in candidates if c["params"] == first.search["chosen"])
    assert chosen is candidates[0] or chosen["overall_accuracy"] >= candidates[0]["overall_accuracy"] + MARGIN


def test_auto_changes_the_defaults_only_when_the_folds_agree():
    """Noisy labels (a quarter flipped at random) over two blobs, 60 polygons: 25 neighbours
    beat knn's default 5 in every fold, and auto takes them; on clean, separable data no
    setting beats the defaults and they stay."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), 30)
    centres = np.where(np.arange(60) % 2, 1.0, -1.0)[groups]
    values = np.stack([centres + rng.normal(0, 1.2, len(groups)), rng.normal(0, 1, len(groups))], axis=1)
    truth = (centres > 0).astype(int) + 1
    noisy = np.where(rng.random(len(groups)) < 0.25, 3 - truth, truth)
    picked = classifiers.train(values, noisy, groups, {}, {}, "knn", "auto", seed=0, validation=0.2)
    assert picked.params.get("n_neighbors", 5) > 5, picked.search
    clean = np.stack([centres * 5 + rng.normal(0, 0.3, len(groups)), rng.normal(0, 1, len(groups))], axis=1)
    kept = classifiers.train(clean, truth, groups, {}, {}, "knn", "auto", seed=0, validation=0.2)
    assert kept.params == {} and kept.search["chosen"] == {}


def test_the_saved_classifier_is_refit_on_every_polygon():
    values, codes, groups = _nc_samples()
    trained = classifiers.train(values, codes, groups, {}, {}, "rf", None, seed=4, validation=0.3)
    assert trained.refit and trained.training_samples == len(codes) and trained.validation_samples > 0
    everything = classifiers.make_classifier("rf", None, 4).fit(values, codes)
    assert np.array_equal(trained.estimator.predict(values), everything.predict(values))
    # Without refit, the file holds the classifier the scores describe (training polygons only).
    held = classifiers.train(values, codes, groups, {}, {}, "rf", None, seed=4, validation=0.3, refit=False)
    mask = ~classifiers.split_by_group(codes, groups, 0.3, 4)[0]
    part = classifiers.make_classifier("rf", None, 4).fit(values[mask], codes[mask])
    assert np.array_equal(held.estimator.predict(values), part.predict(values))
    assert held.metrics == trained.metrics


def test_folds_cross_validate_over_whole_polygons():
    from otbtf_plugin.validation import group_folds

    values, codes, groups = _nc_samples()
    trained = classifiers.train(values, codes, groups, {}, {}, "bayes", None, seed=2, validation=0.3, folds=4)
    validated = trained.cross_validation
    per_fold = validated["per_fold"]
    assert validated["folds"] == 4 and sum(f["samples"] for f in per_fold) == len(codes)
    # Pooled accuracy: the folds' correct samples over all samples.
    correct = sum(f["overall_accuracy"] * f["samples"] for f in per_fold)
    assert validated["pooled"]["overall_accuracy"] == pytest.approx(correct / len(codes))
    assert validated["summary"]["overall_accuracy"]["mean"] == pytest.approx(
        np.mean([f["overall_accuracy"] for f in per_fold])
    )
    # Fold 1, recomputed: the classifier trained on the polygons of the other folds.
    fold = group_folds(codes, groups, 4, 2)
    assert not set(groups[fold == 1].tolist()) & set(groups[fold != 1].tolist())
    model = classifiers.make_classifier("bayes", None, 2).fit(values[fold != 1], codes[fold != 1])
    right = model.predict(values[fold == 1]) == codes[fold == 1]
    assert per_fold[1]["overall_accuracy"] == pytest.approx(np.mean(right))
    with pytest.raises(InputError, match="cannot fill 40 cross-validation folds: use FOLDS of at most"):
        classifiers.train(values, codes, groups, {}, {}, "bayes", None, seed=2, folds=40)
