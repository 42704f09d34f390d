"""ONNX models (onnxruntime) under the same geometry rules as TensorFlow models: each mode
against numpy references on the whole image (real Landsat 8 pixels), whatever the tiles;
channels-first and channels-last files; Deepness metadata served as Deepness serves it;
bad files in one line."""

import numpy as np
import pytest
import rasterio
from numpy.lib.stride_tricks import sliding_window_view

from common import RGB, Log

onnx_models = pytest.importorskip("onnx_models")

from otbtf_plugin.errors import InputError  # noqa: E402
from otbtf_plugin.models.loading import ModelError, load_model, model_path_problem  # noqa: E402
from otbtf_plugin.models.served import classes_of_scores, guess_channels_first  # noqa: E402
from otbtf_plugin.serving import ServeOptions, ServeSource, serve  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 150 x 130 px window of the Landsat 8 sample as reflectance-like float32 (the
    FCN tests) and as 8-bit RGB (what Deepness models take)."""
    window = ((300, 430), (200, 350))
    with rasterio.open(RGB) as src:
        data = src.read(window=window).astype("float32")
        transform = src.window_transform(window)
    folder = tmp_path_factory.mktemp("onnx_scene")
    lo, hi = data.min(axis=(1, 2), keepdims=True), data.max(axis=(1, 2), keepdims=True)
    images = {"float": (data / 10000).astype("float32"), "u8": np.round((data - lo) / (hi - lo) * 255).astype("uint8")}
    paths = {}
    for name, array in images.items():
        paths[name] = folder / f"{name}.tif"
        with rasterio.open(
            paths[name],
            "w",
            driver="GTiff",
            width=array.shape[2],
            height=array.shape[1],
            count=3,
            dtype=array.dtype.name,
            crs="EPSG:32621",
            transform=transform,
        ) as dst:
            dst.write(array)
    return paths, images, transform


def read(path):
    with rasterio.open(path) as src:
        return src.read(), src.transform, src.dtypes[0]


def test_layout_is_read_from_the_sizes():
    assert guess_channels_first((None, 3, None, None)) is True  # PyTorch export, any size
    assert guess_channels_first((None, None, None, 3)) is False
    assert guess_channels_first((1, 3, 512, 512)) is True
    assert guess_channels_first((1, 512, 512, 3)) is False
    assert guess_channels_first((None, 5, 5, 8)) is False  # 5 x 5 patches of 8 bands: not 5 bands
    assert guess_channels_first((None, 8, 5, 5)) is True
    assert guess_channels_first((1, 3, 3, 3)) is None
    assert guess_channels_first((None, None, None, None)) is None


@pytest.mark.parametrize("nhwc", [False, True])
def test_fully_convolutional_equals_the_whole_image(tmp_path, scene, nhwc):
    """Regions mode: a valid 3 x 3 convolution (context 2), channels first or last in the
    file, equals numpy's on the whole image, one output pixel in from the edges."""
    paths, images, transform = scene
    path = onnx_models.save(onnx_models.conv_model(nhwc=nhwc), tmp_path / "conv.onnx")
    model = load_model(path)
    assert model.layout == ("NHWC" if nhwc else "NCHW")
    assert [t.shape for t in model.inputs] == [(None, None, None, 3)]
    expected = onnx_models.conv_reference(images["float"])
    for tile in (1000, 17):
        out = tmp_path / f"out_{tile}.tif"
        result = serve([ServeSource(paths["float"])], path, out, ServeOptions(fully_conv=True, tile_px=tile))
        got, got_transform, _ = read(out)
        assert result.plan.mode == "regions" and result.plan.geometry.rfield - result.plan.geometry.efield == 2
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < TOL
        assert got_transform == rasterio.transform.Affine(
            transform.a, 0, transform.c + transform.a, 0, transform.e, transform.f + transform.e
        )  # one pixel in


def test_fixed_size_model_serves_blocks(tmp_path, scene):
    """A model taking 16 x 16 px and giving its valid 14 x 14 px: blocks mode, the whole
    image's valid convolution, cut to whole blocks, whatever the tiles."""
    paths, images, _ = scene
    path = onnx_models.save(onnx_models.conv_model(size=16), tmp_path / "fixed.onnx")
    expected = onnx_models.conv_reference(images["float"])
    outputs = []
    for tile in (1000, 28):
        out = tmp_path / f"out_{tile}.tif"
        result = serve([ServeSource(paths["float"])], path, out, ServeOptions(tile_px=tile))
        assert (result.plan.mode, result.plan.geometry.rfield, result.plan.geometry.efield) == ("blocks", 16, 14)
        got, _, _ = read(out)
        h, w = got.shape[1:]
        assert (h, w) == (expected.shape[1] // 14 * 14, expected.shape[2] // 14 * 14)
        assert np.abs(got - expected[:, :h, :w]).max() < TOL
        outputs.append(got)
    assert np.array_equal(outputs[0], outputs[1])


def test_patch_classifier_serves_pixels(tmp_path, scene):
    """A 5 x 5 px patch classifier ([n, 3, 5, 5] -> [n, 3]): every output pixel's scores
    are numpy's softmax of its flattened channels-first patch."""
    paths, images, _ = scene
    model, w, b = onnx_models.patch_classifier()
    path = onnx_models.save(model, tmp_path / "patches.onnx")
    image = images["float"].astype(np.float64)
    patches = sliding_window_view(image, (5, 5), axis=(1, 2)).transpose(1, 2, 0, 3, 4)  # (rows, cols, c, 5, 5)
    logits = patches.reshape(*patches.shape[:2], -1) @ w + b
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected = (expected / expected.sum(-1, keepdims=True)).transpose(2, 0, 1)
    for tile, batch in ((1000, 0), (19, 33)):
        out = tmp_path / f"out_{tile}.tif"
        result = serve([ServeSource(paths["float"])], path, out, ServeOptions(tile_px=tile, batch_size=batch))
        assert result.plan.mode == "pixels"
        got, _, _ = read(out)
        assert np.abs(got - expected).max() < TOL


def test_user_placeholder_feeds_an_onnx_input(tmp_path, scene):
    paths, images, _ = scene
    path = onnx_models.save(onnx_models.conv_model(extra_input=True), tmp_path / "gain.onnx")
    out = tmp_path / "out.tif"
    serve([ServeSource(paths["float"])], path, out, ServeOptions(fully_conv=True, user_placeholders={"gain": [2.5]}))
    got, _, _ = read(out)
    assert np.abs(got - onnx_models.conv_reference(images["float"], gain=2.5)).max() < TOL


def test_tta_on_an_onnx_model_equals_the_mean_over_the_eight_turns(tmp_path, scene):
    paths, images, _ = scene
    path = onnx_models.save(onnx_models.conv_model(), tmp_path / "conv.onnx")
    image = images["float"]
    total = 0
    for k in range(4):
        for flip in (False, True):
            turned = np.rot90(image[:, :, ::-1] if flip else image, k, axes=(1, 2))
            value = np.rot90(onnx_models.conv_reference(turned), -k, axes=(1, 2))
            total = total + (value[:, :, ::-1] if flip else value)
    out = tmp_path / "tta.tif"
    serve([ServeSource(paths["float"])], path, out, ServeOptions(fully_conv=True, tta=True, tile_px=40))
    got, _, _ = read(out)
    assert np.abs(got - total / 8).max() < TOL


def test_deepness_segmentor_is_served_as_deepness_serves_it(tmp_path, scene):
    """Nothing typed: 32 px tiles overlapping 25 % (the central 24 px kept), x / 255 then
    standardised, scores under seg_thresh as 0, the class of the highest score, styled with
    the class names, over the whole raster (edges padded, as Deepness grows its extent); the
    same map whatever our own tiles."""
    paths, images, transform = scene
    path = onnx_models.save(
        onnx_models.conv_model(out=4, pad=True, softmax=True, size=32), tmp_path / "seg.onnx", onnx_models.DEEPNESS
    )
    scores, classes = onnx_models.deepness_reference(images["u8"])
    log = Log()
    maps = []
    for tile in (1000, 48):
        out = tmp_path / f"class_{tile}.tif"
        result = serve([ServeSource(paths["u8"])], path, out, ServeOptions(tile_px=tile), progress=log)
        got, got_transform, dtype = read(out)
        assert (result.plan.mode, result.plan.geometry.rfield, result.plan.geometry.efield) == ("blocks", 32, 24)
        assert dtype == "uint8" and got_transform == transform
        assert got.shape[1:] == classes.shape
        maps.append(got[0])
        assert result.style is not None and "urban" in result.style.read_text()
    assert np.array_equal(maps[0], maps[1])
    # scores: within float32 rounding; classes equal wherever the decision is not a near tie
    out = tmp_path / "scores.tif"
    serve([ServeSource(paths["u8"])], path, out, ServeOptions(output_names=["y"]))
    got_scores, _, _ = read(out)
    assert np.abs(got_scores - scores).max() < 1e-5
    top2 = np.sort(np.where(scores < 0.4, 0, scores), axis=0)[-2:]
    clear = ((top2[1] == 0) | (top2[1] - top2[0] > 1e-4)) & (np.abs(scores - 0.4).min(axis=0) > 1e-4)
    assert clear.mean() > 0.99 and np.array_equal(maps[0][clear], classes[clear])
    assert len(np.unique(classes)) > 1
    assert any("Deepness Segmentor" in line for line in log.lines)
    assert not [line for line in log.lines if line.startswith("warning")]  # made for 3000 cm pixels: 30 m ones


@pytest.mark.parametrize("fixed", [1, 3])
def test_a_model_with_a_fixed_batch_size_is_called_with_that_size(tmp_path, scene, fixed):
    """Many exports fix the batch dimension ([1, 3, 32, 32]): serving calls them with that
    many tiles at a time (the last call padded), and the map is the one of any batch size."""
    paths, images, _ = scene
    model = onnx_models.conv_model(out=4, pad=True, softmax=True, size=32, batch=fixed)
    path = onnx_models.save(model, tmp_path / "seg1.onnx", onnx_models.DEEPNESS)
    scores, _ = onnx_models.deepness_reference(images["u8"])
    for batch in (0, 5):
        out = tmp_path / f"scores_{batch}.tif"
        serve([ServeSource(paths["u8"])], path, out, ServeOptions(output_names=["y"], batch_size=batch, tile_px=48))
        assert np.abs(read(out)[0] - scores).max() < 1e-5


def test_deepness_resolution_far_from_the_raster_is_warned(tmp_path, scene):
    paths, _, _ = scene
    path = onnx_models.save(
        onnx_models.conv_model(out=4, pad=True, softmax=True, size=32),
        tmp_path / "seg.onnx",
        {**onnx_models.DEEPNESS, "resolution": 10},
    )
    log = Log()
    serve([ServeSource(paths["u8"])], path, tmp_path / "out.tif", ServeOptions(), progress=log)
    warning = [line for line in log.lines if line.startswith("warning") and "cm" in line]
    assert warning and "10 cm" in warning[0] and "3000 cm" in warning[0]


def test_deepness_regressor_scales_and_other_kinds_are_refused(tmp_path, scene):
    paths, images, _ = scene
    meta = {"model_type": "Regressor", "reg_output_scaling": 100.0}
    path = onnx_models.save(onnx_models.conv_model(out=1), tmp_path / "reg.onnx", meta)
    out = tmp_path / "reg.tif"
    serve([ServeSource(paths["u8"])], path, out, ServeOptions(fully_conv=True))
    got, _, _ = read(out)
    expected = 100 * onnx_models.conv_reference(np.float32(images["u8"] * (1.0 / 255.0)), out=1)
    assert got.shape[1:] == (130, 150)  # the whole raster, as Deepness covers it: edges padded
    assert np.abs(got[:, 1:-1, 1:-1] - expected).max() < 1e-3
    detector = onnx_models.save(onnx_models.conv_model(), tmp_path / "det.onnx", {"model_type": "Detector"})
    with pytest.raises(
        ModelError,
        match=r"^det.onnx is a Deepness Detector model: run it with Object detection \(otbtf:objectdetection\)",
    ):
        load_model(detector)


def test_tta_on_a_deepness_class_map_takes_the_class_of_the_mean_scores(tmp_path, scene):
    paths, _, _ = scene
    path = onnx_models.save(
        onnx_models.conv_model(out=4, pad=True, softmax=True, size=32), tmp_path / "seg.onnx", onnx_models.DEEPNESS
    )
    serve([ServeSource(paths["u8"])], path, tmp_path / "c.tif", ServeOptions(tta=True))
    serve([ServeSource(paths["u8"])], path, tmp_path / "s.tif", ServeOptions(tta=True, output_names=["y"]))
    classes, _, _ = read(tmp_path / "c.tif")
    scores, _, _ = read(tmp_path / "s.tif")
    assert np.array_equal(classes[0], classes_of_scores(scores.transpose(1, 2, 0), range(4), 0.4))


def test_bad_onnx_files_get_one_line(tmp_path, scene):
    paths, _, _ = scene
    good = onnx_models.save(onnx_models.conv_model(), tmp_path / "good.onnx")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(
        ModelError, match=r"^truncated.onnx: not a usable ONNX model \(.+\); check that the file"
    ) as err:
        load_model(truncated)
    assert "\n" not in str(err.value)
    odd = onnx_models.save(onnx_models.with_operator("Sharpen"), tmp_path / "odd.onnx")
    with pytest.raises(ModelError, match=r"^odd.onnx: not a usable ONNX model .*Sharpen") as err:
        load_model(odd)
    assert "\n" not in str(err.value)
    vector = onnx_models.save(onnx_models.vector_model(), tmp_path / "vector.onnx")
    with pytest.raises(ModelError, match=r"model input x \[\?, 3\] float32 is not an image input"):
        serve([ServeSource(paths["float"])], vector, tmp_path / "v.tif")
    text = tmp_path / "model.txt"
    text.write_text("not a model")
    assert "an .onnx or a .keras file" in model_path_problem(text)
    assert model_path_problem(good) is None
    assert not list(tmp_path.glob("*.tif"))


def test_layout_can_be_forced(tmp_path, scene):
    """A 1 x 1 convolution over 3 x 3 px of 3 bands cannot tell its layout: assumed channels
    first (ONNX' convention) and said so; LAYOUT=NHWC reads it the other way."""
    path = onnx_models.save(onnx_models.conv_model(kernel=1, size=3, out=3), tmp_path / "tiny.onnx")
    assumed = load_model(path)
    assert assumed.layout == "NCHW" and "assumed" in assumed.describe()
    forced = load_model(path, layout="NHWC")
    assert forced.layout == "NHWC" and "as asked" in forced.describe()
    x = np.arange(27, dtype=np.float32).reshape(1, 3, 3, 3)
    nchw = onnx_models.conv_reference(x[0].transpose(2, 0, 1), kernel=1, out=3).transpose(1, 2, 0)
    assert np.abs(assumed.run({"x": x})["y"][0] - nchw).max() < TOL
    nhwc = onnx_models.conv_reference(x[0], kernel=1, out=3)  # the array read as [bands, rows, cols]
    assert np.abs(forced.run({"x": x})["y"][0] - nhwc).max() < TOL


def _our_model_folder(folder, architecture):
    """A model folder as training writes it (untrained weights: the export only converts)."""
    from otbtf_plugin.models.metadata import BandStatistics, ModelClass, ModelInput, ModelMetadata, write_metadata
    from otbtf_plugin.training.architectures import BUILDERS, keras_module

    keras = keras_module()
    keras.utils.set_random_seed(3)
    source = ModelInput("x1", rfield=16, bands=3, band_statistics=BandStatistics((0.08, 0.07, 0.06), (0.02,) * 3))
    _, served = BUILDERS[architecture](keras, [source], 3, [2, 5, 7])
    folder.mkdir()
    served.export(str(folder / "savedmodel"), verbose=False)
    served.save(folder / "model.keras")
    write_metadata(
        folder,
        ModelMetadata(
            inputs=[source],
            efield=8 if architecture == "unet" else 1,
            scale=1,
            task="segmentation" if architecture == "unet" else "classification",
            architecture=architecture,
            outputs={"prob": "class probabilities", "class": "class code"},
            default_outputs=["class"],
            classes=[ModelClass(2, "crop"), ModelClass(5, "urban"), ModelClass(7, "water")],
        ),
    )
    return folder


@pytest.mark.parametrize("architecture", ["cnn", "unet"])
def test_an_exported_model_serves_as_its_folder(tmp_path, scene, architecture):
    """otbtf_plugin.onnx_export writes our model folder as ONNX (tf2onnx, channels first):
    served here, the file gives the folder's scores and class codes; a unet's file carries
    Deepness' keys, so that Deepness keeps the same central half of each tile."""
    pytest.importorskip("tf2onnx")
    from otbtf_plugin.models.runtimes import import_onnx
    from otbtf_plugin.onnx_export import export_onnx

    paths, _, _ = scene
    folder = _our_model_folder(tmp_path / "model", architecture)
    path = export_onnx(folder, tmp_path / "model.onnx")
    model = load_model(path)
    assert model.layout == "NCHW" and [t.shape for t in model.inputs] == [(None, 16, 16, 3)]
    served = {}
    for name, source in (("folder", folder), ("onnx", path)):
        for output in ("prob", "class"):
            out = tmp_path / f"{name}_{output}.tif"
            result = serve([ServeSource(paths["float"])], source, out, ServeOptions(output_names=[output]))
            served[name, output] = read(out)[0]
            assert result.plan.geometry.efield == (8 if architecture == "unet" else 1)
    assert np.abs(served["folder", "prob"] - served["onnx", "prob"]).max() < 1e-5
    assert np.array_equal(served["folder", "class"], served["onnx", "class"])
    assert set(np.unique(served["onnx", "class"])) <= {2, 5, 7}
    keys = {p.key for p in import_onnx().load(str(path)).metadata_props}
    deepness = {"model_type", "class_names", "tiles_size", "tiles_overlap", "standardization_std"}
    assert ("otbtf_model" in keys) and (deepness <= keys) == (architecture == "unet")
    with pytest.raises(InputError, match=r"model.keras' lies inside the input folder MODEL"):
        export_onnx(folder, folder / "model.keras")  # never over the model itself
    with pytest.raises(InputError, match=r"ends in '.keras': give a name ending in .onnx$"):
        export_onnx(folder, tmp_path / "model.keras")


def test_a_deepness_model_takes_the_first_bands_of_an_rgba_image(tmp_path, scene):
    """Deepness feeds an RGB model the first three bands of an RGBA orthophoto: so do we,
    and say it; a model without Deepness metadata is still refused a band count it does
    not take."""
    paths, images, transform = scene
    rgba = tmp_path / "rgba.tif"
    with rasterio.open(
        rgba, "w", driver="GTiff", width=150, height=130, count=4, dtype="uint8", crs="EPSG:32621", transform=transform
    ) as dst:
        dst.write(np.concatenate([images["u8"], np.full((1, 130, 150), 255, "uint8")]))
    path = onnx_models.save(
        onnx_models.conv_model(out=4, pad=True, softmax=True, size=32), tmp_path / "seg.onnx", onnx_models.DEEPNESS
    )
    log = Log()
    serve([ServeSource(rgba)], path, tmp_path / "from_rgba.tif", progress=log)
    serve([ServeSource(paths["u8"])], path, tmp_path / "from_rgb.tif")
    assert np.array_equal(read(tmp_path / "from_rgba.tif")[0], read(tmp_path / "from_rgb.tif")[0])
    assert any("source 1 has 4 bands and the model takes 3: bands 1 to 3" in line for line in log.lines)
    plain = onnx_models.save(onnx_models.conv_model(), tmp_path / "plain.onnx")
    with pytest.raises(ModelError, match=r"source 1 has 4 band\(s\); model input x \[\?, \?, \?, 3\]"):
        serve([ServeSource(rgba)], plain, tmp_path / "refused.tif", ServeOptions(fully_conv=True))


def test_a_background_value_that_is_a_class_is_warned(tmp_path, scene):
    """Deepness' class 0 is 'background'; with nodata in the source, the default
    BACKGROUND_VALUE 0 would hide it: said, with the value that would work."""
    _, images, transform = scene
    holes = tmp_path / "holes.tif"
    data = images["u8"].copy()
    data[:, :10, :10] = 7
    with rasterio.open(
        holes,
        "w",
        driver="GTiff",
        width=150,
        height=130,
        count=3,
        dtype="uint8",
        crs="EPSG:32621",
        transform=transform,
        nodata=7,
    ) as dst:
        dst.write(data)
    path = onnx_models.save(
        onnx_models.conv_model(out=4, pad=True, softmax=True, size=32), tmp_path / "seg.onnx", onnx_models.DEEPNESS
    )
    log = Log()
    serve([ServeSource(holes)], path, tmp_path / "a.tif", progress=log)
    assert any("BACKGROUND_VALUE 0 is also a class code" in line for line in log.lines)
    log = Log()
    serve([ServeSource(holes)], path, tmp_path / "b.tif", ServeOptions(background=255), progress=log)
    assert not any("also a class code" in line for line in log.lines)
    with rasterio.open(tmp_path / "b.tif") as src:
        assert src.nodata == 255 and src.dtypes[0] == "uint8" and (src.read(1) == 255).any()


def test_two_inputs_and_two_outputs(tmp_path, scene):
    """Two sources feed an ONNX model's two inputs (bound in order); both outputs are served
    as bands, in the order asked, equal to numpy's on the whole image whatever the tiles."""
    paths, images, transform = scene
    second = tmp_path / "band.tif"
    with rasterio.open(
        second,
        "w",
        driver="GTiff",
        width=150,
        height=130,
        count=1,
        dtype="float32",
        crs="EPSG:32621",
        transform=transform,
    ) as dst:
        dst.write(images["float"][1:2] * 2)
    path = onnx_models.save(onnx_models.two_branch_model(), tmp_path / "two.onnx")
    a, b = onnx_models.two_branch_reference(images["float"], images["float"][1:2] * 2)
    for tile in (1000, 21):
        out = tmp_path / f"two_{tile}.tif"
        serve(
            [ServeSource(paths["float"], rfield=3), ServeSource(second, rfield=3)],
            path,
            out,
            ServeOptions(fully_conv=True, tile_px=tile, output_names=["b", "a"]),
        )
        got, _, _ = read(out)
        assert got.shape == (4, 128, 148)
        assert np.abs(got[:2] - b).max() < TOL and np.abs(got[2:] - a).max() < TOL


def test_a_strided_onnx_model_has_spacing_scale_2(tmp_path, scene):
    paths, images, transform = scene
    path = onnx_models.save(onnx_models.strided_model(), tmp_path / "strided.onnx")
    expected = onnx_models.strided_reference(images["float"])
    for tile in (1000, 13):
        out = tmp_path / f"s_{tile}.tif"
        result = serve([ServeSource(paths["float"])], path, out, ServeOptions(fully_conv=True, tile_px=tile))
        got, got_transform, _ = read(out)
        assert result.plan.geometry.scale == 2 and got_transform.a == 2 * transform.a
        assert got.shape == expected.shape and np.abs(got - expected).max() < TOL


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("tile_size", -32, r"metadata 'tile_size' = -32 is not a tile size in pixels \(a whole number, at least 1\)"),
        ("tile_size", 2.5, r"metadata 'tile_size' = 2.5 is not a tile size in pixels"),
        ("tile_size", "big", r"metadata 'tile_size' = 'big' is not a tile size in pixels"),
        ("tiles_overlap", 150, r"metadata 'tiles_overlap' = 150 is not a percentage from 0 to 99"),
        ("resolution", float("nan"), r"metadata 'resolution' = nan is not a resolution in cm above 0"),
        ("seg_thresh", "Infinity", r"metadata 'seg_thresh' = 'Infinity' is not a threshold from 0 to 1"),
        (
            "standardization_std",
            [0.2, 0, 0.3],
            r"metadata 'standardization_std' = \[0.2, 0, 0.3\] must hold finite "
            r"numbers above 0",
        ),
        (
            "class_names",
            {"a": "x"},
            r"metadata 'class_names' must number the classes 0, 1, 2...; found the keys \['a'\]",
        ),
        ("class_names", "[" * 5000 + "]" * 5000, r"metadata 'class_names' must be \{index: name\}"),
    ],
)
def test_malformed_deepness_keys_are_one_line(tmp_path, scene, key, value, message):
    paths, _, _ = scene
    model = onnx_models.conv_model(out=4, pad=True, softmax=True)
    metadata = {**onnx_models.DEEPNESS, key: value}
    path = onnx_models.save(model, tmp_path / "bad.onnx", metadata)
    with pytest.raises(ModelError, match=rf"^bad.onnx: {message}") as err:
        serve([ServeSource(paths["u8"])], path, tmp_path / "out.tif")
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_a_tile_size_read_from_the_file_counts_against_memory(tmp_path, scene):
    """Deepness' tile_size of 16000 px used to reach 9.4 GB on a 200 x 200 px raster with
    MEMORY_MB 512: it is refused before the model first runs, naming what would fit."""
    paths, _, _ = scene
    model = onnx_models.conv_model(out=4, pad=True, softmax=True)
    path = onnx_models.save(model, tmp_path / "huge.onnx", {**onnx_models.DEEPNESS, "tile_size": 16000})
    with pytest.raises(
        InputError,
        match=r"^the model takes inputs of 16000 x 16000 px x 3 band\(s\) \(read from the "
        r"model\), which need about 23438 MiB with the model's working memory, more "
        r"than MEMORY_MB 512: raise MEMORY_MB to at least 23438",
    ):
        serve([ServeSource(paths["u8"])], path, tmp_path / "out.tif", ServeOptions(memory_mb=512))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.onnx"]


@pytest.mark.parametrize("background", [1e20, float("nan"), 2.5])
def test_a_background_that_a_class_map_cannot_hold_is_one_line(tmp_path, scene, background):
    """BACKGROUND_VALUE is the class map's nodata: 1e20 or nan gave GDAL's traceback."""
    paths, _, _ = scene
    path = onnx_models.save(
        onnx_models.conv_model(out=4, pad=True, softmax=True, size=32), tmp_path / "seg.onnx", onnx_models.DEEPNESS
    )
    with pytest.raises(
        InputError,
        match=r"^BACKGROUND_VALUE \S+ cannot be the nodata value of this int32 output "
        r"\(a class map\): give a whole number from -2147483648 to 2147483647",
    ):
        serve([ServeSource(paths["u8"])], path, tmp_path / "c.tif", ServeOptions(pad=True, background=background))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.onnx"]


@pytest.mark.parametrize("width, height", [(90, 70), (20, 25)])
def test_a_deepness_superresolution_model_serves_on_the_finer_grid(tmp_path, width, height):
    """A Superresolution model (a padded 3 x 3 convolution, then each pixel repeated twice along
    each axis) over a raster larger than its 32 px tiles, and one smaller (padded): the output
    grid is twice as fine, from the same origin, and equals the numpy reference computed on the
    whole image (tiles split their 8 px overlaps in the middle: no tile's padded edge shows)."""
    from otbtf_plugin.serving import serve as serve_model

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (3, height, width), dtype=np.uint8)
    source = tmp_path / "low.tif"
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 3, "dtype": "uint8", "crs": "EPSG:32631"}
    with rasterio.open(source, "w", transform=rasterio.Affine(2, 0, 400000, 0, -2, 5000000), **profile) as dst:
        dst.write(pixels)
    meta = {"model_type": "Superresolution", "tiles_overlap": 25}
    path = onnx_models.save(onnx_models.superresolution_model(), tmp_path / "sr.onnx", meta)
    result = serve_model([ServeSource(source)], path, tmp_path / "high.tif", ServeOptions())
    assert (result.plan, result.upscale) == (None, 2)
    reference = onnx_models.conv_reference(pixels / 255.0, out=3, pad=True).repeat(2, axis=1).repeat(2, axis=2)
    with rasterio.open(tmp_path / "high.tif") as high:
        assert (high.width, high.height) == (2 * width, 2 * height)
        assert high.transform == rasterio.Affine(1, 0, 400000, 0, -1, 5000000)
        assert np.abs(high.read() - reference).max() < 1e-4


def test_a_deepness_recognition_model_is_refused_with_why(tmp_path):
    path = onnx_models.save(onnx_models.conv_model(), tmp_path / "rec.onnx", {"model_type": "Recognition"})
    with pytest.raises(ModelError, match=r"^rec.onnx is a Deepness Recognition model: it turns an image into a vector"):
        load_model(path)


def test_a_superresolution_models_tiles_count_against_memory_mb(tmp_path):
    from otbtf_plugin.errors import InputError
    from otbtf_plugin.serving import serve as serve_model

    pixels = np.zeros((3, 40, 40), np.uint8)
    profile = {"driver": "GTiff", "width": 40, "height": 40, "count": 3, "dtype": "uint8", "crs": "EPSG:32631"}
    with rasterio.open(tmp_path / "low.tif", "w", transform=rasterio.Affine(2, 0, 4e5, 0, -2, 5e6), **profile) as dst:
        dst.write(pixels)
    model = onnx_models.superresolution_model(size=1024, upscale=4)
    path = onnx_models.save(model, tmp_path / "sr.onnx", {"model_type": "Superresolution"})
    with pytest.raises(InputError, match=r"^the super-resolution model's 1024 px tiles need about \d+ MiB"):
        serve_model([ServeSource(tmp_path / "low.tif")], path, tmp_path / "high.tif", ServeOptions(memory_mb=256))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["low.tif", "sr.onnx"]


def test_the_demos_shipped_cnn_serves_where_tensorflow_cannot(tmp_path):
    """data/landsat8/..._cnn.onnx, what the demo serves where TensorFlow has no release (Python
    3.14): onnxruntime alone serves it, its metadata gives the receptive field and the class
    names, and it gives the pixels of the polygons it learned from their polygon's class. A check
    of the file, not an accuracy claim: these are its training pixels."""
    from common import LANDSAT, POLYGONS
    from otbtf_plugin.selection import sample_selection

    shipped = LANDSAT / "LC08_224078_20200518_cnn.onnx"
    out = tmp_path / "classes.tif"
    result = serve([ServeSource(RGB)], shipped, out, ServeOptions(output_names=["class"]))
    assert (result.plan.mode, result.plan.sources[0].rfield) == ("pixels", 16)
    metadata = load_model(shipped).metadata
    assert metadata is not None
    names = {c.code: c.name for c in metadata.classes}
    samples = sample_selection(RGB, POLYGONS, "name", strategy="all")
    classes, _, _ = read(out)
    predicted = np.array([names.get(int(v)) for v in classes[0, samples.rows, samples.cols]])
    truth = np.array([samples.class_names[int(c)] for c in samples.codes])
    assert set(predicted) == {"crop", "developed", "tree", "water"}
    assert (predicted == truth).mean() >= 0.9  # 0.93: pixels near the polygon edges see their neighbours
