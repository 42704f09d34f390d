"""Peer test: our default random forest on raw bands (OTB's defaults: 100 trees, depth 5,
10 samples to split), trained on the same samples as Orfeo ToolBox's TrainVectorClassifier
with its defaults (same training polygons, same held-out polygons), reaches an overall
accuracy within two points of OTB's."""

import shutil
import subprocess

import numpy as np
import pytest
from osgeo import gdal, ogr
from reference import split_polygons

from common import RGB

pytest.importorskip("sklearn")

from otbtf_plugin import classifier_training as dc
from otbtf_plugin import classifiers
from otbtf_plugin.features import FeatureSource, FeatureSpec
from otbtf_plugin.selection import sample_selection

pytestmark = pytest.mark.slow  # OTB's command-line applications side by side

BANDS = ["source1_band1", "source1_band2", "source1_band3"]
SEED = 5


def _subset(source, fids, target):
    ids = ",".join(str(int(f)) for f in fids)  # integers only
    gdal.VectorTranslate(
        str(target),
        str(source),
        format="GPKG",
        layerName="samples",
        SQLStatement=f"SELECT * FROM samples WHERE fid IN ({ids})",  # noqa: S608
    )
    return target


def _otb_accuracy(matrix_csv) -> float:
    rows = [line for line in matrix_csv.read_text().splitlines() if line and not line.startswith("#")]
    matrix = np.array([[float(v) for v in line.split(",")] for line in rows])
    return float(np.trace(matrix) / matrix.sum())


@pytest.mark.skipif(
    shutil.which("otbcli_TrainVectorClassifier") is None, reason="Orfeo ToolBox (otb-bin) is not installed"
)
def test_random_forest_accuracy_within_two_points_of_otb(tmp_path):
    parts = split_polygons(tmp_path / "parts.gpkg", parts=4)
    samples = sample_selection(RGB, parts, "code", strategy="all")
    points = samples.write_gpkg(tmp_path / "points.gpkg")
    features, _, _ = dc.sample_extraction(FeatureSpec([FeatureSource(RGB)]), points, tmp_path / "features.gpkg", "code")
    ours = dc.train_vector_classifier(features, BANDS, "code", tmp_path / "rf.skops", seed=SEED, validation=0.3)

    # The same split, recomputed from the file as ours made it: whole polygons held out.
    dataset = ogr.Open(str(features))
    layer = dataset.GetLayer(0)
    fids, codes, groups = zip(*[(f.GetFID(), f.GetField("code"), f.GetField("originfid")) for f in layer], strict=True)
    held, _ = classifiers.split_by_group(np.array(codes), np.array(groups), 0.3, SEED)
    assert held.sum() == ours.trained.validation_samples and len(np.unique(np.array(groups)[held])) >= 4
    train = _subset(features, np.array(fids)[~held], tmp_path / "train.gpkg")
    valid = _subset(features, np.array(fids)[held], tmp_path / "valid.gpkg")
    matrix = tmp_path / "otb_confusion.csv"
    subprocess.run(
        [
            "otbcli_TrainVectorClassifier",
            "-io.vd",
            str(train),
            "-valid.vd",
            str(valid),
            "-io.out",
            str(tmp_path / "otb_rf.txt"),
            "-io.confmatout",
            str(matrix),
            "-feat",
            *BANDS,
            "-cfield",
            "code",
            "-classifier",
            "rf",  # OTB's defaults against ours
            "-classifier.rf.acc",
            "0",
            "-rand",
            str(SEED),
        ],
        check=True,
        capture_output=True,
    )
    otb = _otb_accuracy(matrix)
    accuracy = ours.trained.metrics["overall_accuracy"]
    print(f"overall accuracy on {held.sum()} held-out samples: ours {accuracy:.4f}, OTB {otb:.4f}")
    assert abs(accuracy - otb) <= 0.02
