#!/usr/bin/env python3
"""The otbtf workflow on the shipped Landsat 8 sample, as a PyQGIS script.

    python3 scripts/demo.py OUTPUT_DIR

The whole workflow: class statistics of the land-cover polygons, sample selection,
patches extraction, training a small CNN, serving it over the scene, then a random
forest on the CNN's deep features, applied to the scene. Writes into
OUTPUT_DIR: class_statistics.csv, samples.gpkg, patches.tif and labels.tif (otbtf
patches images), model/ (the trained model folder), report.html (and .json),
classes.tif (the class map, styled by classes.qml), and quicklooks: quicklook.png
(the scene with the polygons), patches.png (patches of each class) and
classification.png (the scene and its class map side by side); forest.skops,
forest_classes.tif, forest_confidence.tif and forest_classification.png.

Where TensorFlow cannot be installed (Python 3.14: QGIS 3.44 on Debian unstable), step 4 says
so and trains nothing; the next steps use the same CNN exported to ONNX
(data/landsat8/LC08_224078_20200518_cnn.onnx, see data/README.md).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["GDAL_PAM_ENABLED"] = "NO"  # no .aux.xml statistics beside the shipped data

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "landsat8"
RGB = DATA / "LC08_224078_20200518_rgb_crop.tif"
POLYGONS = DATA / "LC08_224078_20200518_polygons.gpkg"
SHIPPED_CNN = DATA / "LC08_224078_20200518_cnn.onnx"  # data/README.md: where TensorFlow cannot run
CLASS_COLOURS = {"water": "#1f78b4", "crop": "#e6c229", "tree": "#1b7837", "developed": "#d7301f"}


def start_qgis(profile: Path):
    from qgis.core import QgsApplication

    app = QgsApplication([], False, str(profile))  # settings stay in the output folder
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    import processing
    from processing.core.Processing import Processing

    Processing.initialize()
    from plugin_files import start_from_repository

    start_from_repository()
    return app, processing


def scene_layer():
    """The sample scene in natural colours (bands are blue, green, red), stretched like QGIS does."""
    from qgis.core import QgsContrastEnhancement, QgsRasterLayer, QgsRasterMinMaxOrigin

    layer = QgsRasterLayer(str(RGB), "Landsat 8")
    renderer = layer.renderer()
    renderer.setRedBand(3)
    renderer.setGreenBand(2)
    renderer.setBlueBand(1)
    layer.setContrastEnhancement(QgsContrastEnhancement.StretchToMinimumMaximum, QgsRasterMinMaxOrigin.CumulativeCut)
    return layer


def quicklook(path: Path, counts: dict[str, int]) -> None:
    from qgis.core import (
        QgsCategorizedSymbolRenderer,
        QgsFillSymbol,
        QgsMapRendererParallelJob,
        QgsMapSettings,
        QgsPalLayerSettings,
        QgsRendererCategory,
        QgsTextFormat,
        QgsVectorLayer,
        QgsVectorLayerSimpleLabeling,
    )
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    raster = scene_layer()
    vector = QgsVectorLayer(str(POLYGONS), "polygons", "ogr")
    categories = []
    for name, colour in CLASS_COLOURS.items():
        symbol = QgsFillSymbol.createSimple({"color": colour, "outline_color": "white", "outline_width": "0.5"})
        symbol.setOpacity(0.85)
        categories.append(QgsRendererCategory(name, symbol, f"{name} ({counts.get(name, 0)} px)"))
    vector.setRenderer(QgsCategorizedSymbolRenderer("name", categories))
    labels = QgsPalLayerSettings()
    labels.fieldName = (
        "concat(name, ' ', "
        + "CASE "
        + " ".join(f"WHEN name = '{n}' THEN '{c} px'" for n, c in counts.items())
        + " END)"
    )
    labels.isExpression = True
    labels.placement = QgsPalLayerSettings.AroundPoint  # beside the small polygons, not over them
    labels.dist = 4
    text = QgsTextFormat()
    text.setColor(QColor("white"))
    text.setSize(11)
    buffer = text.buffer()
    buffer.setEnabled(True)
    buffer.setColor(QColor("black"))
    labels.setFormat(text)
    vector.setLabeling(QgsVectorLayerSimpleLabeling(labels))
    vector.setLabelsEnabled(True)

    settings = QgsMapSettings()
    settings.setLayers([vector, raster])
    settings.setDestinationCrs(raster.crs())
    settings.setExtent(raster.extent())
    settings.setOutputSize(QSize(640, 912))
    settings.setBackgroundColor(QColor("black"))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    job.renderedImage().save(str(path))


def classification_quicklook(path: Path, classes: Path) -> None:
    """The scene and its class map (styled by the .qml beside it), side by side, with a legend."""
    from qgis.core import (
        QgsMapRendererParallelJob,
        QgsMapSettings,
        QgsRasterLayer,
    )
    from qgis.PyQt.QtCore import QRect, QSize, Qt
    from qgis.PyQt.QtGui import QColor, QFont, QImage, QPainter

    scene = scene_layer()
    class_map = QgsRasterLayer(str(classes), "classes")  # picks up classes.qml
    images = []
    for layer in (scene, class_map):
        settings = QgsMapSettings()
        settings.setLayers([layer])
        settings.setDestinationCrs(scene.crs())
        settings.setExtent(scene.extent())
        settings.setOutputSize(QSize(400, 570))
        settings.setBackgroundColor(QColor("white"))
        job = QgsMapRendererParallelJob(settings)
        job.start()
        job.waitForFinished()
        images.append(job.renderedImage())
    canvas = QImage(820, 640, QImage.Format_RGB32)
    canvas.fill(QColor("white"))
    painter = QPainter(canvas)
    painter.drawImage(0, 0, images[0])
    painter.drawImage(420, 0, images[1])
    painter.setFont(QFont("Sans", 10))
    x = 10
    for entry in class_map.renderer().classes():
        painter.fillRect(QRect(x, 590, 18, 18), entry.color)
        painter.setPen(Qt.black)
        painter.drawText(x + 24, 604, entry.label)
        x += 130
    painter.end()
    canvas.save(str(path))


def patches_quicklook(path: Path, patches: Path, labels: Path, codes: dict[str, int], per_class: int = 8) -> None:
    """A mosaic: one row per class, its first patches, contrast-stretched like the scene."""
    import numpy as np
    from qgis.PyQt.QtGui import QImage

    sys.path.insert(0, str(ROOT))
    from otbtf_plugin.patches_image import PatchesImage

    with PatchesImage(patches) as image, PatchesImage(labels) as label_image:
        values = label_image.read(0, len(label_image)).ravel()
        rows = []
        for _name, code in sorted(codes.items(), key=lambda item: item[1]):
            picks = np.flatnonzero(values == code)[:per_class]
            tiles = [
                np.pad(
                    image.read(int(k))[0][:, :, ::-1].astype(float), ((1, 1), (1, 1), (0, 0)), constant_values=np.nan
                )
                for k in picks
            ]  # blue, green, red -> RGB
            rows.append(np.concatenate(tiles, axis=1))
    mosaic = np.concatenate(rows, axis=0)
    low = np.nanpercentile(mosaic, 2, axis=(0, 1))  # per band, like QGIS' stretch
    high = np.nanpercentile(mosaic, 98, axis=(0, 1))
    rgb = np.nan_to_num(np.clip((mosaic - low) / np.maximum(high - low, 1) * 255, 0, 255), nan=255)
    rgb = np.ascontiguousarray(np.repeat(np.repeat(rgb.astype(np.uint8), 6, axis=0), 6, axis=1))
    height, width, _ = rgb.shape
    QImage(rgb.data, width, height, 3 * width, QImage.Format_RGB888).save(str(path))


def main(argv: list[str]) -> int:
    out = Path(argv[1] if len(argv) > 1 else "demo-output").resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    app, processing = start_qgis(out / "qgis-profile")
    print(f"Sample: {RGB.name} (800 x 1140 px, 30 m) with {POLYGONS.name}")

    print("\n[1] otbtf:polygonclassstatistics")
    result = processing.run(
        "otbtf:polygonclassstatistics",
        {
            "INPUT": str(RGB),
            "VECTOR": str(POLYGONS),
            "FIELD": "name",
            "OUTPUT": str(out / "class_statistics.csv"),
        },
    )
    for name, count in result["COUNTS"].items():
        print(f"    {name:<10} {count:>5} px")
    print(f"    -> {result['OUTPUT']}")

    print("\n[2] otbtf:sampleselection (strategy smallest, periodic sampler)")
    selection = processing.run(
        "otbtf:sampleselection",
        {
            "INPUT": str(RGB),
            "VECTOR": str(POLYGONS),
            "FIELD": "name",
            "STRATEGY": 0,
            "SAMPLER": 0,
            "OUTPUT": str(out / "samples.gpkg"),
        },
    )
    for name, count in selection["COUNTS"].items():
        print(f"    {name:<10} {count:>5} samples of {selection['AVAILABLE'][name]}")
    print(f"    -> {selection['OUTPUT']}")

    print("\n[3] otbtf:patchesextraction (16 x 16 px patches)")
    patches = processing.run(
        "otbtf:patchesextraction",
        {
            "SOURCE1": str(RGB),
            "PATCH_SIZE1": 16,
            "VECTOR": selection["OUTPUT"],
            "FIELD": "name",
            "OUTPUT1": str(out / "patches.tif"),
            "OUTPUT_LABELS": str(out / "labels.tif"),
        },
    )
    print(f"    {patches['ACCEPTED']} patches, rejected: {patches['REJECTED'] or 'none'}")
    print(f"    class codes in labels.tif: {patches['CLASS_CODES']}")
    print(f"    -> {patches['OUTPUT1']}\n    -> {patches['OUTPUT_LABELS']}")

    model = train(processing, patches, out)

    print("\n[5] otbtf:tensorflowmodelserve (the model's 'class' output over the whole scene)")
    served = processing.run(
        "otbtf:tensorflowmodelserve",
        {
            "SOURCE1": str(RGB),
            "MODEL": model,
            "OUTPUT_NAMES": "class",
            "OUTPUT": str(out / "classes.tif"),
        },
    )
    print(f"    {served['MODE']} mode, receptive field {served['RFIELD']} px (from the model), {served['TILES']} tiles")
    print(f"    -> {served['OUTPUT']} (styled by {Path(served['OUTPUT']).with_suffix('.qml').name})")

    print("\n[6] otbtf:trainclassifierfromdeepfeatures (random forest on the cnn's 64 'features')")
    forest = processing.run(
        "otbtf:trainclassifierfromdeepfeatures",
        {
            "SOURCE1": str(RGB),
            "MODEL": model,
            "OUTPUT_NAMES": "features",
            "VECTOR": selection["OUTPUT"],
            "FIELD": "name",
            "CLASSIFIER": 0,
            "VALIDATION": 0,
            "SEED": 0,
            "OUTPUT_CLASSIFIER": str(out / "forest.skops"),
            "OUTPUT_REPORT": str(out / "forest.html"),
        },
    )
    print(f"    {forest['TRAINING_SAMPLES']} samples (one polygon per class: nothing to hold out whole)")
    print(f"    -> {forest['OUTPUT_CLASSIFIER']}")

    print("\n[7] otbtf:imageclassifierfromdeepfeatures (the forest over the scene, with its confidence)")
    deep = processing.run(
        "otbtf:imageclassifierfromdeepfeatures",
        {
            "SOURCE1": str(RGB),
            "MODEL": model,
            "OUTPUT_NAMES": "features",
            "CLASSIFIER": forest["OUTPUT_CLASSIFIER"],
            "OUTPUT": str(out / "forest_classes.tif"),
            "OUTPUT_CONFIDENCE": str(out / "forest_confidence.tif"),
        },
    )
    print(f"    {deep['TILES']} tiles\n    -> {deep['OUTPUT']}\n    -> {deep['OUTPUT_CONFIDENCE']}")

    quicklook(out / "quicklook.png", result["COUNTS"])
    classification_quicklook(out / "forest_classification.png", Path(deep["OUTPUT"]))
    patches_quicklook(
        out / "patches.png", Path(patches["OUTPUT1"]), Path(patches["OUTPUT_LABELS"]), patches["CLASS_CODES"]
    )
    classification_quicklook(out / "classification.png", Path(served["OUTPUT"]))
    print(
        f"\nQuicklooks: {out / 'quicklook.png'}, {out / 'patches.png'}, {out / 'classification.png'}, "
        f"{out / 'forest_classification.png'}"
    )
    print(f"Done in {time.monotonic() - started:.1f} s.")
    app.exitQgis()
    return 0


def train(processing, patches: dict, out: Path) -> str:
    """Step 4: the model the next steps use. Where TensorFlow cannot be installed (Python 3.14),
    nothing is trained: the same CNN, trained and exported to ONNX on Debian 12, is used."""
    from otbtf_plugin import packages

    if packages.no_release("tensorflow"):
        print(f"\n[4] otbtf:tensorflowmodeltrain: skipped. {packages.requirement_message('tensorflow')}.")
        print(f"    The next steps use the demo's CNN trained on Debian 12 and exported to ONNX: {SHIPPED_CNN}")
        return str(SHIPPED_CNN)
    print(
        "\n[4] otbtf:tensorflowmodeltrain (cnn patch classifier, the defaults: early stopping, "
        "augmentation, validation held out by polygon)"
    )
    trained = processing.run(
        "otbtf:tensorflowmodeltrain",
        {
            "TRAIN_PATCHES1": patches["OUTPUT1"],
            "TRAIN_LABELS": patches["OUTPUT_LABELS"],
            "SEED": 0,
            "OUTPUT_MODEL": str(out / "model"),
            "OUTPUT_REPORT": str(out / "report.html"),
        },
    )
    print(
        f"    {trained['EPOCHS_RUN']} epochs run, epoch {trained['KEPT_EPOCH']} kept; validation patches "
        f"held out {trained['VALIDATION_METHOD']}"
    )
    print(f"    validation: overall accuracy {trained['OVERALL_ACCURACY']:.3f}, kappa {trained['KAPPA']:.3f}")
    for name, scores in trained["CLASSES"].items():
        print(
            f"    {name:<10} "
            + (
                f"F1 {scores['f1']:.3f} ({scores['support']} patches)"
                if scores["support"]
                else "not assessed: nothing of it could be held out"
            )
        )
    print(
        "    (one polygon per class in this sample: each is cut into blocks, and the report warns that "
        "neighbouring blocks flatter the scores)"
    )
    print(f"    -> {trained['OUTPUT_MODEL']}\n    -> {trained['OUTPUT_REPORT']}")
    return trained["OUTPUT_MODEL"]


if __name__ == "__main__":
    sys.exit(main(sys.argv))
