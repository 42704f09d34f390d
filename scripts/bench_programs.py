#!/usr/bin/env python3
"""The programs ``scripts/bench.py`` times, one function each. Each runs in a fresh process,
so that every side of a race pays its own start-up and imports:

    python3 scripts/bench_programs.py NAME '{"argument": "value", ...}'

Heavy imports stay inside the functions; a program that measures prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def class_statistics(image: str, vector: str) -> None:
    from otbtf_plugin.class_statistics import class_statistics as statistics

    print(json.dumps(statistics(image, vector, "name").by_class()))


def sampling_pipeline(image: str, vector: str, out: str, patch: int) -> None:
    """Class statistics, selection of every sample and extraction, as OTB's three applications."""
    from otbtf_plugin.class_statistics import class_statistics as statistics
    from otbtf_plugin.extraction import PatchSource, extract_patches
    from otbtf_plugin.raster_writer import writer_peak_rss_mib
    from otbtf_plugin.selection import sample_selection

    statistics(image, vector, "name")
    samples = sample_selection(image, vector, "name", strategy="all")
    samples.write_gpkg(out + "/ours_samples.sqlite")  # SQLite, as OTB writes
    result = extract_patches(
        [PatchSource(image, patch)],
        out + "/ours_samples.sqlite",
        [out + "/ours_patches.tif"],
        "name",
        labels_output=out + "/ours_labels.tif",
    )
    print(len(samples), result.accepted, writer_peak_rss_mib() or 0.0)


def training_patches(image: str, vector: str, out: str) -> None:
    """Every sample of the polygons as 16 px patches and labels (the training bench's input)."""
    from otbtf_plugin.extraction import PatchSource, extract_patches
    from otbtf_plugin.selection import sample_selection

    sample_selection(image, vector, "name", strategy="all").write_gpkg(out + "/train_points.gpkg")
    extract_patches(
        [PatchSource(image, 16)],
        out + "/train_points.gpkg",
        [out + "/train_patches.tif"],
        "name",
        labels_output=out + "/train_labels.tif",
    )


def _keras():
    from otbtf_plugin.models.runtimes import import_tensorflow

    import_tensorflow()
    import keras

    keras.utils.set_random_seed(0)
    return keras


def serving_models(out: str) -> None:
    """``bench_fcn`` (fully-convolutional, context 6, 8 channels), ``bench_fcn32`` (3 layers of
    32 channels, context 4) and ``bench_patch`` (16 px patches, 4 classes), as SavedModels."""
    keras = _keras()
    inp = keras.Input((None, None, 3), name="x")
    h = keras.layers.Rescaling(1 / 10000.0)(inp)
    h = keras.layers.Conv2D(8, 5, activation="relu")(h)
    h = keras.layers.Conv2D(8, 3, activation="relu")(h)
    keras.Model(inp, keras.layers.Conv2D(2, 1, name="y")(h)).export(out + "/bench_fcn", verbose=False)
    # The serving race's model, as in the issue that set its goal: 3 layers, 32 channels.
    inp = keras.Input((None, None, 3), name="x")
    h = keras.layers.Rescaling(1 / 10000.0)(inp)
    h = keras.layers.Conv2D(32, 3, activation="relu")(h)
    h = keras.layers.Conv2D(32, 3, activation="relu")(h)
    race = keras.Model(inp, {"y": keras.layers.Conv2D(2, 1, name="y")(h)})
    race.export(out + "/bench_fcn32", verbose=False)
    # The same model and weights as ONNX (channels first, as PyTorch exports are), for the
    # onnxruntime / TensorFlow race.
    from otbtf_plugin.onnx_export import keras_to_onnx, write_onnx

    write_onnx(keras_to_onnx(race, "bench_fcn32")[0], Path(out) / "bench_fcn32.onnx", {"layout": "NCHW"})
    inp = keras.Input((16, 16, 3), name="x")
    h = keras.layers.Rescaling(1 / 10000.0)(inp)
    h = keras.layers.Conv2D(16, 3, activation="relu")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(16, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    keras.Model(inp, keras.layers.Dense(4, activation="softmax", name="prob")(h)).export(
        out + "/bench_patch", verbose=False
    )


def scale_model(out: str) -> None:
    """``bench_small``: one 3 x 3 convolution, for the 30000 x 30000 px run."""
    keras = _keras()
    inp = keras.Input((None, None, 3), name="x")
    h = keras.layers.Rescaling(1 / 10000.0)(inp)
    keras.Model(inp, keras.layers.Conv2D(1, 3, name="y")(h)).export(out + "/bench_small", verbose=False)


def serve_run(image: str, model: str, output: str, fcn: bool) -> None:
    """Our serving, timed from the call (TensorFlow already imported)."""
    from otbtf_plugin.models.runtimes import import_tensorflow

    import_tensorflow()
    from otbtf_plugin.raster_writer import writer_peak_rss_mib
    from otbtf_plugin.serving import ServeOptions, ServeSource, serve

    started = time.perf_counter()
    result = serve([ServeSource(image)], model, output, ServeOptions(fully_conv=fcn))
    seconds = time.perf_counter() - started
    pixels = result.plan.grid.width * result.plan.grid.height
    print(json.dumps({"seconds": seconds, "pixels": pixels, "writer_mib": writer_peak_rss_mib()}))


def near_free_onnx(out: str) -> None:
    """``near_free.onnx``: a 1 x 1 convolution, 3 bands to 2, channels first. It costs next to
    nothing, so that serving it measures the pipeline (reads, writes, threads), not a model."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.array([[1, 2, 3], [-1, 0, 1]], "float32").reshape(2, 3, 1, 1) * 1e-4, "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "near_free",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "rows", "cols"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, "rows", "cols"])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.metadata_props.add(key="layout", value='"NCHW"')
    onnx.save(model, out + "/near_free.onnx")


def pipeline_parts(image: str, model: str, out: str, tile: int) -> None:
    """Each part of serving alone, on one thread, over the same image tile by tile: decoding
    (every tile read), the model (onnxruntime on one thread, the tiles already in memory) and
    encoding (its outputs written as serving writes them: 2 float32 bands, ZSTD level 1,
    predictor 2, 256 px blocks). Prints the seconds of each."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    from otbtf_plugin.models.runtimes import import_onnxruntime

    ort = import_onnxruntime()
    with rasterio.Env(GDAL_NUM_THREADS="1", GDAL_CACHEMAX=64), rasterio.open(image) as src:
        windows = [
            Window(col, row, min(tile, src.width - col), min(tile, src.height - row))
            for row in range(0, src.height, tile)
            for col in range(0, src.width, tile)
        ]
        started = time.perf_counter()
        tiles = [src.read(window=w) for w in windows]
        decode = time.perf_counter() - started
        profile = {
            "driver": "GTiff", "width": src.width, "height": src.height, "count": 2, "dtype": "float32",
            "crs": src.crs, "transform": src.transform, "tiled": True, "blockxsize": 256, "blockysize": 256,
            "compress": "zstd", "zstd_level": 1, "predictor": 2,
        }  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    started = time.perf_counter()
    outputs = [session.run(None, {"x": t[None].astype("float32")})[0][0] for t in tiles]
    compute = time.perf_counter() - started
    del tiles
    with rasterio.Env(GDAL_NUM_THREADS="1", GDAL_CACHEMAX=64):
        started = time.perf_counter()
        with rasterio.open(out + "/parts.tif", "w", **profile) as dst:
            for w, values in zip(windows, outputs, strict=True):
                dst.write(values, window=w)
        encode = time.perf_counter() - started
    pixels = int(sum(w.width * w.height for w in windows))
    print(json.dumps({"decode": decode, "model": compute, "encode": encode, "pixels": pixels,
                      "check": float(np.mean(outputs[0]))}))  # fmt: skip


def serve_engine_two_sizes(small: str, large: str, model: str, out: str) -> None:
    """``serve()`` of the engine as a script calls it, fully convolutional: a warm-up run, then
    ``small`` and ``large`` timed; the fixed costs cancel in their difference."""
    from otbtf_plugin.serving import ServeOptions, ServeSource, serve

    def run(image: str) -> tuple[float, int]:
        started = time.perf_counter()
        result = serve([ServeSource(image)], model, out + "/served_engine.tif", ServeOptions(fully_conv=True))
        return time.perf_counter() - started, result.plan.grid.width * result.plan.grid.height

    run(small)  # warm-up
    (t_small, p_small), (t_large, p_large) = run(small), run(large)
    print(json.dumps({"seconds": t_large - t_small, "pixels": p_large - p_small, "large": [t_large, p_large]}))


def serve_two_sizes(small: str, large: str, model: str, out: str, fcn: bool) -> None:
    """Our serving as a QGIS user runs it, ``processing.run`` in a QGIS application: a warm-up
    run (TensorFlow imported, the model loaded), then ``small`` and ``large`` timed; the
    fixed costs cancel in their difference."""
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    sys.path.insert(0, str(ROOT / "scripts"))
    from qgis.core import QgsApplication

    app = QgsApplication([], False, out + "/qgis-profile")
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    import processing
    from plugin_files import start_from_repository
    from processing.core.Processing import Processing

    Processing.initialize()
    start_from_repository()

    def run(image: str) -> tuple[float, int]:
        started = time.perf_counter()
        result = processing.run(
            "otbtf:tensorflowmodelserve",
            {"SOURCE1": image, "MODEL": model, "FULLYCONV": fcn, "OUTPUT": out + "/served_two_sizes.tif"},
        )
        seconds = time.perf_counter() - started
        import rasterio

        with rasterio.open(result["OUTPUT"]) as served:
            pixels = served.width * served.height
        return seconds, pixels

    run(small)  # warm-up
    (t_small, p_small), (t_large, p_large) = run(small), run(large)
    print(
        json.dumps(
            {
                "small": [t_small, p_small],
                "large": [t_large, p_large],
                "seconds": t_large - t_small,
                "pixels": p_large - p_small,
            }
        )
    )
    app.exitQgis()


def in_memory_fcn_tiled(image: str, model: str, sizes: list[int]) -> None:
    """The reference at its best: the image already in memory (float32), the model run tile by
    tile (each tile's input with the model's context) at each tile size; the fastest size
    counts. The same output pixels as serving's."""
    from otbtf_plugin.models.runtimes import import_tensorflow

    tf = import_tensorflow()
    import numpy as np
    import rasterio

    with rasterio.open(image) as src:
        data = np.ascontiguousarray(src.read().transpose(1, 2, 0)[None].astype("float32"))
    function = tf.saved_model.load(model).signatures["serving_default"]
    probe = next(iter(function(x=tf.constant(data[:, :100, :100])).values())).numpy()
    context = 100 - probe.shape[1]
    height, width = data.shape[1] - context, data.shape[2] - context
    timings = {}
    for size in sizes:
        function(x=tf.constant(data[:, : size + context, : size + context]))  # warm-up at this size
        started = time.perf_counter()
        for row in range(0, height, size):
            for col in range(0, width, size):
                tile = data[:, row : min(row + size, height) + context, col : min(col + size, width) + context]
                next(iter(function(x=tf.constant(tile)).values())).numpy()
        timings[size] = time.perf_counter() - started
    best = min(timings, key=timings.get)
    print(
        json.dumps(
            {
                "seconds": timings[best],
                "pixels": height * width,
                "tile": best,
                "timings": {str(k): v for k, v in timings.items()},
            }
        )
    )


def in_memory_fcn_tiled_onnx(image: str, model: str, sizes: list[int]) -> None:
    """``in_memory_fcn_tiled`` for onnxruntime: the image in memory as the model takes it
    (float32, channels first: as rasterio reads it), one session as serving opens it, tile
    by tile at each size; the fastest counts."""
    import numpy as np
    import rasterio

    from otbtf_plugin.models.runtimes import import_onnxruntime

    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = len(os.sched_getaffinity(0))  # as serving sizes it: the cores it may use
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    with rasterio.open(image) as src:
        data = np.ascontiguousarray(src.read()[None].astype("float32"))
    probe = session.run(None, {name: data[:, :, :100, :100]})[0]
    context = 100 - probe.shape[2]
    height, width = data.shape[2] - context, data.shape[3] - context
    timings = {}
    for size in sizes:
        session.run(None, {name: np.ascontiguousarray(data[:, :, : size + context, : size + context])})  # warm-up
        started = time.perf_counter()
        for row in range(0, height, size):
            for col in range(0, width, size):
                tile = data[:, :, row : min(row + size, height) + context, col : min(col + size, width) + context]
                session.run(None, {name: np.ascontiguousarray(tile)})
        timings[size] = time.perf_counter() - started
    best = min(timings, key=timings.get)
    print(
        json.dumps(
            {
                "seconds": timings[best],
                "pixels": height * width,
                "tile": best,
                "timings": {str(k): v for k, v in timings.items()},
            }
        )
    )


def in_memory_patches(image: str, model: str, sizes: list[int]) -> None:
    """The reference at its best: the image in memory, each batch of patches of 16 px gathered
    from a view of the image (one copy, timed: serving gathers them too) and predicted, at
    each batch size of ``sizes``; the fastest counts."""
    import numpy as np

    from otbtf_plugin.models.runtimes import import_tensorflow

    tf = import_tensorflow()
    import rasterio

    with rasterio.open(image) as src:
        pixels = src.read().astype("float32")
    n_r, n_c = pixels.shape[1] - 15, pixels.shape[2] - 15
    hwc = np.ascontiguousarray(pixels.transpose(1, 2, 0))
    windows = np.lib.stride_tricks.sliding_window_view(hwc, (16, 16), axis=(0, 1))  # (n_r, n_c, 3, 16, 16)
    function = tf.saved_model.load(model).signatures["serving_default"]
    function(x=tf.constant(windows[0, :8].transpose(0, 2, 3, 1)))
    rows, cols = np.divmod(np.arange(n_r * n_c), n_c)
    timings = {}
    for size in sizes:
        started = time.perf_counter()
        for first in range(0, n_r * n_c, size):
            batch = windows[rows[first : first + size], cols[first : first + size]].transpose(0, 2, 3, 1)
            next(iter(function(x=tf.constant(batch)).values())).numpy()
        timings[size] = time.perf_counter() - started
    best = min(timings, key=timings.get)
    print(
        json.dumps(
            {
                "seconds": timings[best],
                "pixels": n_r * n_c,
                "batch": best,
                "timings": {str(k): v for k, v in timings.items()},
            }
        )
    )


def training_run(patches: str, labels: str) -> None:
    """The cnn trained 2 epochs from the patches image on disk, then from arrays in memory."""
    import numpy as np

    keras = _keras()
    from otbtf_plugin.models.metadata import BandStatistics, ModelInput
    from otbtf_plugin.training.architectures import build_cnn
    from otbtf_plugin.training.data import TrainingSet, band_statistics, batches, batches_per_epoch

    data = TrainingSet([patches], labels, "training")
    indices = np.arange(data.count)
    arrays, values = data.read(indices)
    codes = sorted(np.unique(values).astype(int).tolist())
    label_index = np.zeros(max(codes) + 1, dtype=np.int64)
    label_index[codes] = np.arange(len(codes))
    mean, std = band_statistics(data.images[0], indices)
    source = ModelInput("x1", rfield=16, bands=3, band_statistics=BandStatistics(tuple(mean), tuple(std)))
    epochs, batch = 2, 64

    def model():
        keras.utils.set_random_seed(0)
        m = build_cnn(keras, [source], len(codes), codes)[0]
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        m.fit(arrays[0][:batch].astype("float32"), label_index[values[:batch].astype(int)], epochs=1, verbose=0)
        return m

    m = model()
    started = time.perf_counter()
    # As training runs it: the batches of every epoch in one sequence, shuffled by the seed.
    m.fit(
        batches(keras, data, indices, batch, label_index, 0, True, epochs=epochs),
        epochs=epochs,
        steps_per_epoch=batches_per_epoch(len(indices), batch),
        shuffle=False,
        verbose=0,
    )
    disk = time.perf_counter() - started
    x, y = arrays[0].astype("float32"), label_index[values.astype(int)]
    m = model()
    started = time.perf_counter()
    m.fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0)
    memory = time.perf_counter() - started
    print(json.dumps({"patches": int(data.count), "epochs": epochs, "disk": disk, "memory": memory}))


def baseline_run(model: str) -> None:
    """TensorFlow and the model loaded and run once: the memory floor of any serving run."""
    from otbtf_plugin.models.runtimes import import_tensorflow

    import_tensorflow()
    import numpy as np

    from otbtf_plugin.models.loading import load_model

    load_model(model).run({"x": np.zeros((1, 256, 256, 3), "float32")})


def classify_run(image: str, classifier: str, output: str) -> None:
    from otbtf_plugin.features import FeatureSource, FeatureSpec
    from otbtf_plugin.image_classification import classify_image

    started = time.perf_counter()
    classify_image(FeatureSpec([FeatureSource(image)]), classifier, output, compress="deflate")
    print(json.dumps({"seconds": time.perf_counter() - started}))


def classifier_samples(image: str, points: str, out: str, features: str, classifier: str) -> None:
    """Pixel values at the points (every pixel of the polygons when given polygons), and our
    forest trained on them (100 trees of depth <= 25, as OTB's in the race)."""
    from otbtf_plugin.classifier_training import sample_extraction, train_vector_classifier
    from otbtf_plugin.features import FeatureSource, FeatureSpec
    from otbtf_plugin.selection import sample_selection

    if points.endswith("polygons.gpkg"):
        points = str(sample_selection(image, points, "code", strategy="all").write_gpkg(out + "/rf_points.gpkg"))
    values, _, _ = sample_extraction(FeatureSpec([FeatureSource(image)]), points, features, "code")
    train_vector_classifier(
        values,
        ["source1_band1", "source1_band2", "source1_band3"],
        "code",
        classifier,
        classifier="rf",
        params="n_estimators=100;max_depth=25;min_samples_split=2",
        validation=0,
    )


def cluster_run(image: str, model: str, output: str, workers: int) -> None:
    """Serving on a Dask LocalCluster of ``workers`` single-core workers, timed after a warm-up run."""
    os.environ["PYTHONPATH"] = str(ROOT)
    from distributed import LocalCluster

    from otbtf_plugin.execution.cluster import DaskExecutor
    from otbtf_plugin.serving import ServeOptions, ServeSource, serve

    # One worker = one core (TensorFlow's own thread pools limited), as machines of a cluster.
    env = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, env=env
    ) as cluster:
        # Uncompressed output: the client (here sharing the 2 cores) only assembles tiles.
        options = ServeOptions(fully_conv=True, tile_px=512, compress="none")
        executor = DaskExecutor(cluster.scheduler_address)
        serve([ServeSource(image)], model, output, options, executor=executor)  # warm-up: workers load
        started = time.perf_counter()
        result = serve([ServeSource(image)], model, output, options, executor=executor)
        print(
            json.dumps(
                {"seconds": time.perf_counter() - started, "pixels": result.plan.grid.width * result.plan.grid.height}
            )
        )


def race_detector(out: str, image: str, tile: int = 512) -> None:
    """``race_detector.onnx``: a detector with real work (3 convolutions of 32 channels, a score
    per 8 px cell through a sigmoid) and an Ultralytics head (each cell proposes itself), with
    Deepness metadata: tiles of ``tile`` px overlapping 10 %, the input standardised for the
    race's 16-bit image, and a confidence threshold that 0.1 % of the cells of ``image``'s
    first tiles pass (about a thousand objects on the whole image, as a real scene has)."""
    import numpy as np

    from otbtf_plugin.models.runtimes import import_onnx

    onnx = import_onnx()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    from detector_example import cell_detector

    rng = np.random.default_rng(0)
    inits, body, last, channels = [], [], "images", 3
    for k, width in enumerate((32, 32, 32, 1)):
        size = 3 if width > 1 else 1
        inits += [
            numpy_helper.from_array(rng.normal(0, 0.3, (width, channels, size, size)).astype("float32"), f"w{k}"),
            numpy_helper.from_array(rng.normal(0, 0.1, width).astype("float32"), f"b{k}"),
        ]
        pads = [size // 2] * 4
        body.append(helper.make_node("Conv", [last, f"w{k}", f"b{k}"], [f"c{k}"], kernel_shape=[size, size], pads=pads))
        last, channels = f"c{k}", width
        if width > 1:
            body.append(helper.make_node("Relu", [last], [f"r{k}"]))
            last = f"r{k}"
    import onnxruntime as ort
    import rasterio

    unset = cell_detector(onnx, body, inits, last, tile, 8, {})
    session = ort.InferenceSession(unset.SerializeToString(), providers=["CPUExecutionProvider"])
    mean, std = 30.0, 30.0  # of x / 255: the 16-bit reflectances near 0 +- 1
    with rasterio.open(image) as src:
        sample = (src.read([1, 2, 3], window=((0, 2 * tile), (0, 2 * tile))).astype("float32") / 255 - mean) / std
    scores = [
        session.run(None, {"images": sample[None, :, r : r + tile, c : c + tile]})[0][0, 4]
        for r in (0, tile)
        for c in (0, tile)
    ]
    metadata = {
        "model_type": "Detector",
        "det_type": "YOLO_Ultralytics",
        "class_names": {"0": "object"},
        "tiles_overlap": 10,
        "standardization_mean": [mean] * 3,
        "standardization_std": [std] * 3,
        "det_conf": float(np.quantile(np.concatenate(scores), 0.999)),
        "det_iou_thresh": 0.4,
    }
    onnx.save(cell_detector(onnx, body, inits, last, tile, 8, metadata), out + "/race_detector.onnx")


def detect_run(image: str, model: str, output: str) -> None:
    """Our object detection from the GeoTIFF, timed from the call."""
    from otbtf_plugin.detection import detect

    started = time.perf_counter()
    result = detect(image, model, output)
    print(json.dumps({"seconds": time.perf_counter() - started, "objects": result.objects, "tiles": result.tiles}))


def detect_in_memory(image: str, model: str) -> None:
    """The same detector tile by tile on the image in memory (read before the clock starts):
    its onnxruntime session on every core, the same tiles, the same decoding and suppression
    (per tile, then over the image), timed from the session's creation."""
    import numpy as np
    import onnxruntime as ort
    import rasterio

    from otbtf_plugin.detection import load_detector
    from otbtf_plugin.detection.decoding import Candidates, decode, suppress
    from otbtf_plugin.grid import overlapping_tiles

    settings = load_detector(model)  # the thresholds and the standardisation the file holds
    confidence, mean, std = settings.confidence, float(settings.mean[0]), float(settings.std[0])

    with rasterio.open(image) as src:
        pixels = src.read([1, 2, 3])
    started = time.perf_counter()
    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    tile, overlap = 512, int(512 * 10 / 100 * 2) // 2
    parts = []
    for w in overlapping_tiles(pixels.shape[2], pixels.shape[1], tile, overlap):
        x = pixels[:, w.row_off : w.row_off + tile, w.col_off : w.col_off + tile].astype(np.float32)
        x = (x / 255 - mean) / std
        found = decode("YOLO_Ultralytics", session.run(None, {"images": x[None]}), 1, confidence)
        found = found.take(suppress(found, 0.4))
        found.boxes = found.boxes + np.array([w.col_off, w.row_off, w.col_off, w.row_off], dtype=np.float64)
        parts.append(found)
    every = Candidates(
        np.concatenate([p.boxes for p in parts]),
        np.concatenate([p.scores for p in parts]),
        np.concatenate([p.classes for p in parts]),
    )
    kept = suppress(every, 0.4)
    print(json.dumps({"seconds": time.perf_counter() - started, "objects": len(kept)}))


PROGRAMS = {
    f.__name__: f
    for f in (
        class_statistics,
        sampling_pipeline,
        training_patches,
        serving_models,
        scale_model,
        serve_run,
        serve_two_sizes,
        near_free_onnx,
        pipeline_parts,
        serve_engine_two_sizes,
        in_memory_fcn_tiled,
        in_memory_fcn_tiled_onnx,
        in_memory_patches,
        training_run,
        baseline_run,
        classify_run,
        classifier_samples,
        cluster_run,
        race_detector,
        detect_run,
        detect_in_memory,
    )
}


if __name__ == "__main__":
    PROGRAMS[sys.argv[1]](**json.loads(sys.argv[2]))
