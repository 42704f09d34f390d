"""Accuracy on ground nobody trained on: grouped cross-validation on the North Carolina scene.

Every polygon pixel of ``data/nc_landsat7`` is a sample (nodata masked). The polygons are
shared out among ``--folds`` folds (``validation.group_folds``: a polygon is in one fold
only; the single agriculture polygon is cut in two halves by rows, as the reference in
``data/README.md`` does); each fold is predicted by a model trained on the other folds, and
the overall accuracy is pooled over all folds. The same folds for every method:

- OTB 8.1's random forest (``otbcli_TrainVectorClassifier``, its defaults) when installed;
- our classifiers with their defaults and with the candidate settings listed below;
- our cnn on 8 px patches (a validation set of polygons held out of the training folds,
  for PATIENCE), when ``--networks`` is given.

Run (in the repository): ``QT_QPA_PLATFORM=offscreen
PYTHONPATH=.devdeps/python3.11:$(python3 -m plugin.installer folders) python3 scripts/measure_accuracy.py``
(about a minute; ``--networks``: several more). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess  # nosec B404
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otbtf_plugin import classifier_training, classifiers  # noqa: E402
from otbtf_plugin.classifiers.search import search  # noqa: E402
from otbtf_plugin.features import FeatureSource, FeatureSpec  # noqa: E402
from otbtf_plugin.metrics import confusion_matrix, report  # noqa: E402
from otbtf_plugin.selection import sample_selection  # noqa: E402
from otbtf_plugin.validation import group_folds  # noqa: E402

IMAGE = ROOT / "data" / "nc_landsat7" / "landsat_multiband.tif"
POLYGONS = ROOT / "data" / "nc_landsat7" / "landsat96_polygons.gpkg"
BANDS = [f"source1_band{b}" for b in range(1, 6)]

# (classifier, CLASSIFIER_PARAMS) measured beside the defaults.
# (classifier, CLASSIFIER_PARAMS, STRATEGY) measured beside the defaults; rf's defaults are
# OTB's (max_depth=5;min_samples_split=10), "max_depth=None" gives scikit-learn's grown trees.
CANDIDATES = [
    ("rf", "", "all"),
    ("rf", "", "smallest"),
    ("rf", "max_depth=None;min_samples_split=2", "all"),
    ("rf", "max_depth=None;min_samples_leaf=5", "all"),
    ("rf", "max_depth=10;min_samples_leaf=5", "all"),
    ("rf", "class_weight='balanced'", "all"),
    ("rf", "auto", "all"),
    ("svm", "", "all"),
    ("svm", "auto", "all"),
    ("gbt", "", "all"),
    ("knn", "", "all"),
    ("bayes", "", "all"),
]


def samples(folder: Path):
    """Every polygon pixel: features, classes, polygon, row."""
    selected = sample_selection(IMAGE, POLYGONS, "id", strategy="all")
    points = selected.write_gpkg(folder / "points.gpkg")
    features, _, _ = classifier_training.sample_extraction(
        FeatureSpec([FeatureSource(IMAGE)]), points, folder / "features.gpkg", "id"
    )
    from osgeo import ogr

    dataset = ogr.Open(str(features))
    layer = dataset.GetLayer(0)
    rows = [
        (
            f.GetFID(),
            f.GetField("id"),
            f.GetField("originfid"),
            f.GetGeometryRef().GetY(),
            [f.GetField(b) for b in BANDS],
        )
        for f in layer
    ]
    fids, codes, origin, y, values = zip(*rows, strict=True)
    return (
        features,
        np.array(fids),
        np.array(codes),
        np.array(origin),
        np.array(y),
        np.array(values, dtype=np.float32),
    )


def folds_of(codes, origin, y, count: int, seed: int) -> np.ndarray:
    """Fold of every sample; a class of a single polygon is cut in two halves (north, south)."""
    groups = origin.astype(np.int64) * 2
    for code in np.unique(codes):
        members = codes == code
        if len(np.unique(origin[members])) == 1:
            groups[members] += (y[members] < np.median(y[members])).astype(np.int64)
    return group_folds(codes, groups, count, seed)


def pooled(truth_predicted: list[tuple[np.ndarray, np.ndarray]], codes) -> dict:
    truth = np.concatenate([t for t, _ in truth_predicted])
    predicted = np.concatenate([p for _, p in truth_predicted])
    return report(confusion_matrix(truth, predicted, list(codes)), [str(c) for c in codes])


def smallest(codes: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
    """``mask`` reduced to as many samples of each class as the smallest class has (STRATEGY smallest)."""
    rng = np.random.default_rng(seed)
    count = min(int((mask & (codes == c)).sum()) for c in np.unique(codes[mask]))
    keep = np.zeros_like(mask)
    for code in np.unique(codes[mask]):
        members = np.flatnonzero(mask & (codes == code))
        keep[rng.choice(members, count, replace=False)] = True
    return keep


def ours(name, params, values, codes, fold, seed, strategy, origin) -> dict:
    parts = []
    for k in np.unique(fold):
        train = fold != k
        if strategy == "smallest":
            train = smallest(codes, train, seed)
        chosen = params or None
        if params == "auto":  # chosen by grouped cross-validation inside the training folds only
            chosen, _, _ = search(name, values[train], codes[train], origin[train], seed)
        estimator = classifiers.make_classifier(name, chosen, seed)
        estimator.fit(values[train], codes[train])
        parts.append((codes[fold == k], estimator.predict(values[fold == k])))
    return pooled(parts, np.unique(codes))


def _otb(arguments: list[str]) -> None:
    """Run an OTB application (a fixed name and our own arguments), its log on failure."""
    done = subprocess.run(arguments, capture_output=True, text=True, check=False)  # noqa: S603  # nosec B603
    if done.returncode:
        raise SystemExit(f"{arguments[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def otb_forest(features: Path, fids, codes, fold, seed, folder: Path) -> dict | None:
    if shutil.which("otbcli_TrainVectorClassifier") is None:
        return None
    from osgeo import gdal

    parts = []
    for k in np.unique(fold):
        subsets = {}
        for side, mask in (("train", fold != k), ("valid", fold == k)):
            ids = ",".join(str(int(f)) for f in fids[mask])
            subsets[side] = folder / f"{side}{k}.gpkg"
            gdal.VectorTranslate(
                str(subsets[side]),
                str(features),
                format="GPKG",
                layerName="samples",
                SQLStatement=f"SELECT * FROM samples WHERE fid IN ({ids})",  # noqa: S608  # nosec B608
            )
        model = folder / f"otb_rf{k}.txt"
        _otb(
            [
                "otbcli_TrainVectorClassifier",
                "-io.vd",
                str(subsets["train"]),
                "-io.out",
                str(model),
                "-feat",
                *BANDS,
                "-cfield",
                "id",
                "-classifier",
                "rf",
                "-rand",
                str(seed),
            ]
        )
        out = subsets["valid"]  # update mode: the field "predicted" is added to the file
        _otb(
            ["otbcli_VectorClassifier", "-in", str(out), "-model", str(model), "-feat", *BANDS, "-cfield", "predicted"]
        )
        from osgeo import ogr

        dataset = ogr.Open(str(out))
        pairs = [(f.GetField("id"), f.GetField("predicted")) for f in dataset.GetLayer(0)]
        truth, predicted = (np.array(v) for v in zip(*pairs, strict=True))
        parts.append((truth, predicted))
    return pooled(parts, np.unique(codes))


# (label, TrainConfig options) of the cnn on 8 px patches.
# (label, TrainConfig options) of the cnn on 8 px patches. The defaults since 2026-11-30: at
# most 100 epochs, PATIENCE 10, AUGMENT, no class weights, learning rate 0.001.
NETWORKS = [
    ("cnn, defaults", {}),
    (
        "cnn, 20 epochs, no PATIENCE, no AUGMENT, CLASS_WEIGHTS (the defaults before 2026-11-30)",
        {"epochs": 20, "patience": 0, "augment": False, "class_weights": True},
    ),
    ("cnn, 20 epochs, no PATIENCE, no AUGMENT", {"epochs": 20, "patience": 0, "augment": False}),
    ("cnn, PATIENCE 5, no AUGMENT, CLASS_WEIGHTS", {"patience": 5, "augment": False, "class_weights": True}),
    ("cnn, PATIENCE 5, no AUGMENT", {"patience": 5, "augment": False}),
    ("cnn, PATIENCE 5", {"patience": 5}),
    ("cnn, LEARNING_RATE 0.0003", {"learning_rate": 3e-4}),
    ("cnn, LEARNING_RATE 0.0003, no AUGMENT", {"learning_rate": 3e-4, "augment": False}),
]
PATCH = 8


def _write_patches(path: Path, patches: np.ndarray) -> None:
    """(n, h, w, bands) -> a patches image in otbtf's layout."""
    from otbtf_plugin.patches_image import PatchesWriter

    with PatchesWriter(
        path, len(patches), patches.shape[2], patches.shape[1], patches.shape[3], patches.dtype
    ) as writer:
        writer.write(patches.transpose(0, 3, 1, 2))


def networks(folder: Path, seed: int, count: int, variants: list[int] | None = None) -> list[tuple[str, dict, float]]:
    """The cnn variants (and a forest on each one's deep features) on 8 px patches of every
    polygon pixel, the same folds rule; each training holds out polygons of its own training
    folds for PATIENCE."""
    from otbtf_plugin.extraction import PatchSource, extract_patches
    from otbtf_plugin.models.runtimes import import_tensorflow
    from otbtf_plugin.patches_image import PatchesImage, read_origins, write_origins
    from otbtf_plugin.training import TrainConfig, train

    tf = import_tensorflow()
    points = folder / "points.gpkg"
    extract_patches([PatchSource(IMAGE, PATCH)], points, [folder / "x.tif"], "id", labels_output=folder / "y.tif")
    with PatchesImage(folder / "x.tif") as images, PatchesImage(folder / "y.tif") as labels:
        x = images.read(0, len(images))
        codes = labels.read(0, len(labels)).ravel().astype(np.int64)
    origins, _ = read_origins(folder / "y.tif", len(codes))
    fold = folds_of(codes, origins.polygon, -origins.row.astype(float), count, seed)
    rows = []
    for label, options in [NETWORKS[i] for i in variants] if variants else NETWORKS:
        started = time.perf_counter()
        parts, deep_parts = [], []
        for k in np.unique(fold):
            train_mask = fold != k
            _write_patches(folder / "tx.tif", x[train_mask])
            _write_patches(folder / "ty.tif", codes[train_mask].reshape(-1, 1, 1, 1))
            write_origins(
                folder / "ty.origins.csv", origins.polygon[train_mask], origins.col[train_mask], origins.row[train_mask]
            )
            model = folder / f"model{k}"
            shutil.rmtree(model, ignore_errors=True)
            train(TrainConfig([folder / "tx.tif"], folder / "ty.tif", model, seed=seed, **options))
            served = tf.saved_model.load(str(model / "savedmodel")).signatures["serving_default"]
            out = {name: [] for name in ("class", "features")}
            for start in range(0, len(x), 512):
                result = served(x1=tf.constant(x[start : start + 512].astype(np.float32)))
                for name in out:
                    out[name].append(result[name].numpy())
            predicted = np.concatenate(out["class"])
            parts.append((codes[~train_mask], predicted[~train_mask]))
            features = np.concatenate(out["features"])
            forest = classifiers.make_classifier("rf", None, seed).fit(features[train_mask], codes[train_mask])
            deep_parts.append((codes[~train_mask], forest.predict(features[~train_mask])))
        seconds = time.perf_counter() - started
        rows.append((label, pooled(parts, np.unique(codes)), seconds))
        rows.append((f"rf (defaults) on the deep features of: {label}", pooled(deep_parts, np.unique(codes)), 0.0))
    started = time.perf_counter()
    raw = ours("rf", "", x[:, PATCH // 2, PATCH // 2, :], codes, fold, seed, "all", origins.polygon)
    rows.append(
        ("rf (defaults) on the raw bands of the same patches' centre pixels", raw, time.perf_counter() - started)
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--networks", action="store_true", help="the cnn variants too (minutes)")
    parser.add_argument("--networks-only", action="store_true", help="the cnn variants alone")
    parser.add_argument("--variants", type=int, nargs="*", help="the cnn variants to run (indexes in NETWORKS)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="otbtf-accuracy-"))
    try:
        features, fids, codes, origin, y, values = samples(folder)
        fold = folds_of(codes, origin, y, args.folds, args.seed)
        print(
            f"{len(codes)} samples, {len(np.unique(origin))} polygons, {args.folds} folds grouped by polygon "
            f"(seed {args.seed}); pooled overall accuracy on the held-out folds\n"
        )
        print("| method | overall accuracy | kappa | seconds |\n|---|---|---|---|")
        started = time.perf_counter()
        otb = None if args.networks_only else otb_forest(features, fids, codes, fold, args.seed, folder)
        if otb:
            print(
                f"| OTB 8.1 rf, its defaults | {otb['overall_accuracy']:.3f} | {otb['kappa']:.3f} | "
                f"{time.perf_counter() - started:.1f} |"
            )
        for name, params, strategy in [] if args.networks_only else CANDIDATES:
            started = time.perf_counter()
            scores = ours(name, params, values, codes, fold, args.seed, strategy, origin)
            print(
                f"| ours {name} {params or '(defaults)'}, STRATEGY {strategy} | {scores['overall_accuracy']:.3f} | "
                f"{scores['kappa']:.3f} | {time.perf_counter() - started:.1f} |"
            )
        if args.networks or args.networks_only:
            for label, scores, seconds in networks(folder, args.seed, args.folds, args.variants):
                print(
                    f"| ours {label} | {scores['overall_accuracy']:.3f} | {scores['kappa']:.3f} | {seconds:.1f} |",
                    flush=True,
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
