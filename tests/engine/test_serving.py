"""Serving, against references computed apart: the model applied once to the whole
image in memory (numpy patch gathering, one call), on real Landsat 8 data.
Tiled results must equal them whatever the tile and batch sizes."""

import math

import models
import numpy as np
import pytest
import rasterio

from common import DATA, RGB, CancelAfter, Log

keras = pytest.importorskip("keras")

from otbtf_plugin.errors import Cancelled, InputError  # noqa: E402
from otbtf_plugin.execution.pipeline import LocalThreads  # noqa: E402
from otbtf_plugin.models.loading import ModelError, load_model  # noqa: E402
from otbtf_plugin.serving import (  # noqa: E402
    ServeOptions,
    ServeSource,
    parse_user_placeholders,
    serve,
)

B2_30 = DATA / "landsat8" / "LC08_224077_20200518_B2_30m_crop.tif"
B2_60 = DATA / "landsat8" / "LC08_224077_20200518_B2_60m_crop.tif"
TOL = 1e-5


def read(path):
    with rasterio.open(path) as src:
        return src.read(), src.transform, src.crs, src.dtypes[0], src.nodata


@pytest.fixture(scope="module")
def rgb_window():
    """A 150 x 130 px window of the sample: small enough for whole-image references."""
    window = ((300, 430), (200, 350))
    with rasterio.open(RGB) as src:
        return src.read(window=window).astype("float32"), src.window_transform(window)


@pytest.fixture(scope="module")
def small_rgb(tmp_path_factory, rgb_window):
    data, transform = rgb_window
    path = tmp_path_factory.mktemp("rgb") / "rgb.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=3,
        dtype="uint16",
        crs="EPSG:32621",
        transform=transform,
    ) as dst:
        dst.write(data.astype("uint16"))
    return path


def patch_classifier(rf, bands=3, seed=0, name="x1"):
    return models.patch_classifier(rf, bands, classes=4, name=name, seed=seed, conv=6)


def reference_patches(image, rf, scale=1):
    """Every patch (API rule) whose output pixel fits: centre pixel c, start c - rf // 2."""
    _, height, width = image.shape
    before = rf // 2 - scale // 2
    n_c = (width - (rf - scale)) // scale
    n_r = (height - (rf - scale)) // scale
    patches = np.stack(
        [image[:, r * scale : r * scale + rf, c * scale : c * scale + rf] for r in range(n_r) for c in range(n_c)]
    )
    return patches.transpose(0, 2, 3, 1), n_r, n_c, before


@pytest.mark.slow
@pytest.mark.parametrize("rf", [16, 7])  # even and odd receptive fields
def test_patch_based_equals_whole_image_prediction(tmp_path, small_rgb, rgb_window, rf):
    model = patch_classifier(rf)
    path = tmp_path / "m.keras"
    model.save(path)
    image, transform = rgb_window
    patches, n_r, n_c, before = reference_patches(image, rf)
    expected = model.predict(patches, batch_size=4096, verbose=0).reshape(n_r, n_c, 4).transpose(2, 0, 1)
    for tile, batch in ((1000, 0), (37, 100), (64, 7)):
        out = tmp_path / f"out_{tile}.tif"
        result = serve([ServeSource(small_rgb)], path, out, ServeOptions(tile_px=tile, batch_size=batch))
        got, got_transform, crs, dtype, _ = read(out)
        assert result.plan.mode == "pixels"
        assert got.shape == expected.shape == (4, 130 - rf + 1, 150 - rf + 1)
        assert np.abs(got - expected).max() <= TOL
        # Output pixel (0, 0) is source pixel (before, before): origin shifted by that much.
        assert got_transform.c == transform.c + before * 30 and got_transform.f == transform.f - before * 30
        assert crs.to_epsg() == 32621 and dtype == "float32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras", "out_1000.tif", "out_37.tif", "out_64.tif"]


def fcn(context_kernels=(5, 3), stride=1, seed=1, outputs=("y",)):
    return models.fcn(kernels=context_kernels, stride=stride, seed=seed, features="feat" in outputs)


def test_fully_convolutional_equals_one_call_on_the_whole_image(tmp_path, small_rgb, rgb_window):
    model = fcn()
    path = tmp_path / "fcn.keras"
    model.save(path)
    image, transform = rgb_window
    expected = np.asarray(model(image.transpose(1, 2, 0)[None], training=False))[0].transpose(2, 0, 1)
    # context 4 + 2 = 6: output 150 - 6 = 144 wide, starting 3 px in (centres coincide).
    assert expected.shape == (2, 124, 144)
    for tile in (64, 50, 1000):
        out = tmp_path / f"fcn_{tile}.tif"
        result = serve([ServeSource(small_rgb)], path, out, ServeOptions(fully_conv=True, tile_px=tile))
        got, got_transform, _, _, _ = read(out)
        assert result.plan.mode == "regions"
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= TOL
        assert got_transform.c == transform.c + 3 * 30


def test_strided_model_spacing_scale_2(tmp_path, small_rgb, rgb_window):
    model = fcn(context_kernels=(4, 3), stride=2)  # conv 4 stride 2 then conv 3: scale 2
    path = tmp_path / "strided.keras"
    model.save(path)
    image, _ = rgb_window
    expected = np.asarray(model(image.transpose(1, 2, 0)[None], training=False))[0].transpose(2, 0, 1)
    for tile in (16, 40):
        out = tmp_path / f"s_{tile}.tif"
        result = serve([ServeSource(small_rgb)], path, out, ServeOptions(fully_conv=True, tile_px=tile))
        got, got_transform, _, _, _ = read(out)
        assert result.plan.geometry.scale == 2
        n_r, n_c = got.shape[1:]
        # The reference's first n output pixels are the served ones (same first block).
        assert np.abs(got - expected[:, :n_r, :n_c]).max() <= TOL
        assert got_transform.a == 60.0 and got_transform.e == -60.0
    with pytest.raises(ModelError, match="use SPCSCALE=2"):
        serve([ServeSource(small_rgb)], path, tmp_path / "bad.tif", ServeOptions(fully_conv=True, scale=3))


def test_two_outputs_are_bands_in_order(tmp_path, small_rgb, rgb_window):
    model = fcn(outputs=("y", "feat"))
    path = tmp_path / "two.keras"
    model.save(path)
    image, _ = rgb_window
    result = model(image.transpose(1, 2, 0)[None], training=False)
    y = np.asarray(result["y"])[0].transpose(2, 0, 1)
    feat = np.asarray(result["feat"])[0].transpose(2, 0, 1)[:, 1:-1, 1:-1]  # context 4 vs 6: crop 1
    out = tmp_path / "two.tif"
    serve([ServeSource(small_rgb)], path, out, ServeOptions(fully_conv=True, output_names=["feat", "y"], tile_px=48))
    got, _, _, _, _ = read(out)
    assert got.shape == (5 + 2, 124, 144)
    assert np.abs(got[:5] - feat).max() <= TOL and np.abs(got[5:] - y).max() <= TOL
    with rasterio.open(out) as src:
        assert src.descriptions[:2] == ("feat[0]", "feat[1]") and src.descriptions[-1] == "y[1]"


def test_two_resolutions_patch_based(tmp_path):
    """30 m (16 px) and 60 m (8 px) sources: each output pixel uses the 60 m patch
    centred on the 60 m pixel that contains its centre."""
    keras.utils.set_random_seed(3)
    a = keras.Input((16, 16, 1), name="x30")
    b = keras.Input((8, 8, 1), name="x60")
    fa = keras.layers.Flatten()(keras.layers.Rescaling(1 / 5000.0)(a))
    fb = keras.layers.Flatten()(keras.layers.Rescaling(1 / 5000.0)(b))
    out = keras.layers.Dense(3, name="z")(keras.layers.Concatenate()([fa, fb]))
    model = keras.Model([a, b], out)
    path = tmp_path / "two_res.keras"
    model.save(path)
    out_path = tmp_path / "out.tif"
    result = serve([ServeSource(B2_30), ServeSource(B2_60)], path, out_path, ServeOptions(tile_px=97))
    got, transform, _, _, _ = read(out_path)
    b30, b60 = read(B2_30)[0][0].astype("float32"), read(B2_60)[0][0].astype("float32")
    # Output pixel (r, c) = 30 m pixel (r0 + r, c0 + c), with (r0, c0) from the transform.
    c0 = round((transform.c - 718005.0) / 30)
    r0 = round((-2784615.0 - transform.f) / 30)
    assert result.plan.mode == "pixels" and c0 == 8
    rows, cols = np.meshgrid(np.arange(got.shape[1]) + r0, np.arange(got.shape[2]) + c0, indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    p30 = np.stack([b30[r - 8 : r + 8, c - 8 : c + 8] for r, c in zip(rows, cols, strict=True)])
    p60 = np.stack([b60[r // 2 - 4 : r // 2 + 4, c // 2 - 4 : c // 2 + 4] for r, c in zip(rows, cols, strict=True)])
    expected = model.predict([p30[..., None], p60[..., None]], batch_size=8192, verbose=0)
    assert np.abs(got.reshape(3, -1).T - expected).max() <= TOL
    # Columns that fit: 30 m source, 16 px patches: c - 8 >= 0 and c + 7 <= 399, so 8..392;
    # 60 m source, 8 px patches around pixel c // 2: c // 2 - 4 >= 0 and c // 2 + 3 <= 199,
    # so 8..393. Both: 8..392, 385 columns.
    assert got.shape[2] == 385


def test_user_placeholder_scalar(tmp_path, small_rgb, rgb_window):
    keras.utils.set_random_seed(4)
    x = keras.Input((None, None, 3), name="x")
    gain = keras.Input((1,), name="gain")
    h = keras.layers.Conv2D(1, 3, name="c")(keras.layers.Rescaling(1 / 5000.0)(x))
    scaled = keras.layers.Multiply(name="y")([h, keras.layers.Reshape((1, 1, 1))(gain)])
    model = keras.Model([x, gain], scaled)
    path = tmp_path / "gain.keras"
    model.save(path)
    image, _ = rgb_window
    out = tmp_path / "g.tif"
    serve(
        [ServeSource(small_rgb)],
        path,
        out,
        ServeOptions(fully_conv=True, user_placeholders=parse_user_placeholders("gain=[2.5]")),
    )
    got, _, _, _, _ = read(out)
    plain = np.asarray(model([image.transpose(1, 2, 0)[None], np.array([[1.0]], "float32")]))[0, ..., 0]
    assert np.abs(got[0] - 2.5 * plain).max() <= 1e-4


def test_parse_user_placeholders():
    assert parse_user_placeholders("a=1; b=0.5;c=true;d=[0.2,0.5]") == {"a": 1, "b": 0.5, "c": True, "d": [0.2, 0.5]}
    with pytest.raises(InputError, match="not of the form name=value"):
        parse_user_placeholders("a")
    with pytest.raises(InputError, match="'x' is not a number"):
        parse_user_placeholders("a=x")


def test_nodata_background_and_skipped_tiles(tmp_path):
    """Real band with nodata: a 100 x 100 px hole; output pixels whose centre pixel is
    nodata get the background value, tiles inside the hole are not computed."""
    src = tmp_path / "hole.tif"
    with rasterio.open(B2_30) as ds:
        data = ds.read()
        profile = ds.profile | {"nodata": 0}
    data[:, 100:200, 100:200] = 0
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(data)
    model = patch_classifier(8, bands=1)
    path = tmp_path / "m.keras"
    model.save(path)
    out = tmp_path / "o.tif"
    result = serve([ServeSource(src)], path, out, ServeOptions(tile_px=32, background=-1))
    got, _, _, _, nodata = read(out)
    assert nodata == -1
    # output pixel (r, c) is source pixel (r + 4, c + 4)
    hole = np.zeros(got.shape[1:], dtype=bool)
    hole[96:196, 96:196] = True
    assert (got[:, hole] == -1).all()
    assert (got[:, ~hole] != -1).all()
    assert result.skipped_tiles >= 4  # 32 px tiles wholly inside the hole (and its context)


def test_geometry_errors_say_what_would_work(tmp_path, small_rgb):
    patch = patch_classifier(16)
    patch.save(tmp_path / "p.keras")
    with pytest.raises(ModelError, match="RFIELD1=12 but model input x1 takes 16 x 16 px: use RFIELD1=16"):
        serve([ServeSource(small_rgb, rfield=12)], tmp_path / "p.keras", tmp_path / "o.tif")
    fcn().save(tmp_path / "f.keras")
    with pytest.raises(
        ModelError,
        match=r"^EFIELD=32 does not fit this model: it maps 64 x 64 px to 58 x 58 px; "
        "use RFIELD1=64, EFIELD=58",
    ):
        serve(
            [ServeSource(small_rgb, rfield=64)],
            tmp_path / "f.keras",
            tmp_path / "o.tif",
            ServeOptions(fully_conv=True, efield=32),
        )
    # The same sizes read from a model folder's metadata are not quoted as if typed
    folder = models.model_folder(fcn(), tmp_path / "folder", {"inputs": [{"name": "x", "rfield": 64}], "efield": 32})
    with pytest.raises(
        ModelError,
        match=r"^the expression field of 32 px in the model's metadata does not fit this "
        "model: it maps 64 x 64 px to 58 x 58 px",
    ):
        serve([ServeSource(small_rgb)], folder, tmp_path / "o.tif", ServeOptions(fully_conv=True))
    folder = models.model_folder(patch_classifier(16), tmp_path / "patch", {"inputs": [{"name": "x1", "rfield": 12}]})
    with pytest.raises(
        ModelError,
        match=r"^the receptive field of 12 px in the model's metadata but model input x1 "
        "takes 16 x 16 px: use RFIELD1=16",
    ):
        serve([ServeSource(small_rgb)], folder, tmp_path / "o.tif")
    with pytest.raises(ModelError, match="has no output 'scores'; its outputs: prob"):
        serve([ServeSource(small_rgb)], tmp_path / "p.keras", tmp_path / "o.tif", ServeOptions(output_names=["scores"]))
    with pytest.raises(ModelError, match="has no input 'x9'"):
        serve([ServeSource(small_rgb, placeholder="x9")], tmp_path / "p.keras", tmp_path / "o.tif")
    with pytest.raises(ModelError, match=r"source 1 has 1 band.*expects 3"):
        serve([ServeSource(B2_30)], tmp_path / "p.keras", tmp_path / "o.tif")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="is not a model"):
        serve([ServeSource(small_rgb)], tmp_path / "empty", tmp_path / "o.tif")
    assert not (tmp_path / "o.tif").exists()


def test_savedmodel_export_serves_like_the_keras_file(tmp_path, small_rgb):
    model = fcn()
    model.save(tmp_path / "f.keras")
    model.export(tmp_path / "exported", verbose=False)
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    serve([ServeSource(small_rgb)], tmp_path / "f.keras", a, ServeOptions(fully_conv=True))
    serve([ServeSource(small_rgb)], tmp_path / "exported", b, ServeOptions(fully_conv=True))
    assert np.abs(read(a)[0] - read(b)[0]).max() <= TOL
    assert load_model(tmp_path / "exported").kind == "savedmodel"


def test_cancel_leaves_no_output(tmp_path, small_rgb):
    patch_classifier(16).save(tmp_path / "p.keras")

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(Cancelled):
        serve(
            [ServeSource(small_rgb)],
            tmp_path / "p.keras",
            out_dir / "o.tif",
            ServeOptions(tile_px=16),
            progress=CancelAfter(2),
        )
    assert list(out_dir.iterdir()) == []


@pytest.mark.slow
def test_receptive_field_larger_than_the_image(tmp_path, small_rgb):
    patch_classifier(200).save(tmp_path / "big.keras")
    with pytest.raises(InputError, match="no output pixel has its whole receptive field inside"):
        serve([ServeSource(small_rgb)], tmp_path / "big.keras", tmp_path / "o.tif")
    # Padding makes it possible: the output covers the whole source.
    result = serve([ServeSource(small_rgb)], tmp_path / "big.keras", tmp_path / "o.tif", ServeOptions(pad=True))
    assert (result.plan.grid.width, result.plan.grid.height) == (150, 130)
    assert math.isclose(result.plan.grid.x0, read(small_rgb)[1].c)


def test_otbtf_style_tf1_savedmodel_with_named_placeholders(tmp_path, small_rgb, rgb_window):
    """A graph-mode SavedModel as otbtf's Python API wrote them: placeholder x1
    [?, 16, 16, 3] and an output named prediction, signature serving_default."""
    import tensorflow as tf

    export = tmp_path / "otbtf_savedmodel"
    rng = np.random.default_rng(5)
    kernel = rng.normal(size=(16 * 16 * 3, 2)).astype("float32") / 5000.0
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 16, 16, 3], name="x1")
        flat = tf.reshape(x, [-1, 16 * 16 * 3])
        prediction = tf.identity(tf.matmul(flat, tf.constant(kernel)), name="prediction")
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(export))
            signature = tf.compat.v1.saved_model.predict_signature_def({"x1": x}, {"prediction": prediction})
            builder.add_meta_graph_and_variables(
                session, [tf.compat.v1.saved_model.SERVING], signature_def_map={"serving_default": signature}
            )
            builder.save()
    out = tmp_path / "o.tif"
    result = serve([ServeSource(small_rgb)], export, out, ServeOptions(tile_px=50))
    assert result.plan.sources[0].name == "x1" and result.plan.geometry.rfield == 16
    image, _ = rgb_window
    patches, n_r, n_c, _ = reference_patches(image, 16)
    expected = (patches.reshape(len(patches), -1) @ kernel).reshape(n_r, n_c, 2).transpose(2, 0, 1)
    got = read(out)[0]
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_model_folder_metadata_gives_geometry_and_normalisation(tmp_path, small_rgb, rgb_window):
    """A folder of ours: SavedModel + otbtf_model.json. The model has dynamic
    shapes; the metadata gives the receptive field and the band normalisation."""
    import json

    keras.utils.set_random_seed(6)
    inp = keras.Input((None, None, 3), name="image")
    h = keras.layers.Conv2D(3, 5, name="c")(inp)
    out = keras.layers.GlobalAveragePooling2D(name="avg")(h)
    model = keras.Model(inp, out)
    folder = tmp_path / "my_model"
    model.export(folder / "savedmodel", verbose=False)
    mean, std = [7000.0, 6500.0, 6000.0], [500.0, 400.0, 300.0]
    (folder / "otbtf_model.json").write_text(
        json.dumps(
            {
                "inputs": [{"name": "image", "rfield": 9, "normalisation": {"mean": mean, "std": std}}],
                "efield": 1,
                "scale": 1,
            }
        )
    )
    result = serve([ServeSource(small_rgb)], folder, tmp_path / "o.tif")
    assert result.plan.geometry.rfield == 9 and result.plan.mode == "pixels"
    image, _ = rgb_window
    patches, n_r, n_c, _ = reference_patches(image, 9)
    normalised = (patches - np.array(mean, "float32")) / np.array(std, "float32")
    expected = np.asarray(model.predict(normalised, batch_size=8192, verbose=0)).reshape(n_r, n_c, 3)
    assert np.abs(read(tmp_path / "o.tif")[0] - expected.transpose(2, 0, 1)).max() <= 1e-4


def test_lambda_layer_is_refused_unless_allowed(tmp_path, small_rgb):
    inp = keras.Input((None, None, 3), name="x")
    out = keras.layers.Lambda(lambda t: t * 2.0, name="twice")(inp)
    keras.Model(inp, out).save(tmp_path / "lambda.keras")
    with pytest.raises(ModelError, match="Lambda layer, whose Python code would run when loading it"):
        load_model(tmp_path / "lambda.keras")
    model = load_model(tmp_path / "lambda.keras", allow_lambda=True)
    assert model.run({"x": np.ones((1, 2, 2, 3), "float32")})["twice"].max() == 2.0


def test_output_shapes_n_and_n_y_x(tmp_path, small_rgb, rgb_window):
    """[n] from a patch model and [n, y, x] from an FCN become one band each."""
    keras.utils.set_random_seed(7)
    inp = keras.Input((5, 5, 3), name="x")
    flat = keras.layers.Dense(1)(keras.layers.Flatten()(keras.layers.Rescaling(1 / 5000.0)(inp)))
    vector = keras.Model(inp, keras.layers.Reshape((), name="v")(flat))
    vector.save(tmp_path / "n.keras")
    image, _ = rgb_window
    patches, n_r, n_c, _ = reference_patches(image, 5)
    serve([ServeSource(small_rgb)], tmp_path / "n.keras", tmp_path / "n.tif")
    expected = vector.predict(patches, verbose=0).reshape(n_r, n_c)
    assert np.abs(read(tmp_path / "n.tif")[0][0] - expected).max() <= TOL
    fcn_in = keras.Input((None, None, 3), name="x")
    conv = keras.layers.Conv2D(1, 3)(keras.layers.Rescaling(1 / 5000.0)(fcn_in))
    squeezed = keras.Model(fcn_in, keras.layers.Reshape((-1,), name="flat")(conv))  # not [n, y, x]: refused
    squeezed.save(tmp_path / "bad.keras")
    with pytest.raises(ModelError, match="not an image"):
        serve([ServeSource(small_rgb)], tmp_path / "bad.keras", tmp_path / "b.tif", ServeOptions(fully_conv=True))
    nyx = keras.Model(fcn_in, keras.layers.Lambda(lambda t: t[..., 0], name="yx")(conv))
    nyx.save(tmp_path / "nyx.keras")
    serve(
        [ServeSource(small_rgb)],
        tmp_path / "nyx.keras",
        tmp_path / "nyx.tif",
        ServeOptions(fully_conv=True, allow_lambda=True),
    )
    expected = np.asarray(nyx(image.transpose(1, 2, 0)[None]))[0]
    assert np.abs(read(tmp_path / "nyx.tif")[0][0] - expected).max() <= TOL


def test_fixed_size_block_model(tmp_path, small_rgb, rgb_window):
    """A model with a fixed 16 px input and an 8 x 8 px output block ('same' convolutions,
    then a centre crop): served block by block on a grid anchored at the first output
    pixel, whole blocks only. Reference: the model on each 16 px block, in memory."""
    model = models.block_model(8)
    model.save(tmp_path / "blocks.keras")
    image, transform = rgb_window
    # before = 16 // 2 - 8 // 2 = 4: output block j starts 4 px in, its input at 8 j.
    n_r, n_c = (130 - 8) // 8, (150 - 8) // 8
    blocks = np.stack([image[:, r * 8 : r * 8 + 16, c * 8 : c * 8 + 16] for r in range(n_r) for c in range(n_c)])
    predicted = model.predict(blocks.transpose(0, 2, 3, 1), verbose=0)  # (n, 8, 8, 2)
    expected = predicted.reshape(n_r, n_c, 8, 8, 2).transpose(4, 0, 2, 1, 3).reshape(2, n_r * 8, n_c * 8)
    for tile in (16, 40, 1000):
        out = tmp_path / f"b{tile}.tif"
        result = serve([ServeSource(small_rgb)], tmp_path / "blocks.keras", out, ServeOptions(tile_px=tile))
        got, got_transform, _, _, _ = read(out)
        assert result.plan.mode == "blocks" and result.plan.geometry.efield == 8
        assert got.shape == expected.shape == (2, 120, 136)
        assert np.abs(got - expected).max() <= TOL
        assert got_transform.c == transform.c + 4 * 30


from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)  # each example builds a model: keep runs bounded


@settings(
    max_examples=8, phases=NO_SHRINK, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    k1=st.integers(1, 5),
    k2=st.integers(1, 4),
    stride=st.sampled_from([1, 2]),
    width=st.integers(24, 70),
    height=st.integers(24, 70),
    tile=st.integers(5, 60),
)
def test_property_tiled_fcn_equals_the_whole_image(tmp_path_factory, rgb_window, k1, k2, stride, width, height, tile):
    """Random receptive fields, spacing scales, image and tile sizes: the tiled result
    equals the model called once on the whole image, on every output pixel whose whole
    footprint (scale x scale source pixels) and context lie inside the source."""
    image, transform = rgb_window
    crop = image[:, :height, :width]
    folder = tmp_path_factory.mktemp("prop")
    path = folder / "img.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=3,
        dtype="uint16",
        crs="EPSG:32621",
        transform=transform,
    ) as dst:
        dst.write(crop.astype("uint16"))
    keras.utils.set_random_seed(k1 * 10 + k2)
    inp = keras.Input((None, None, 3), name="x")
    h = keras.layers.Conv2D(3, k1, strides=stride, activation="relu")(keras.layers.Rescaling(1 / 5000.0)(inp))
    model = keras.Model(inp, keras.layers.Conv2D(2, k2, name="y")(h))
    model.save(folder / "m.keras")
    expected = np.asarray(model(crop.transpose(1, 2, 0)[None]))[0].transpose(2, 0, 1)
    served = serve(
        [ServeSource(path)], folder / "m.keras", folder / "o.tif", ServeOptions(fully_conv=True, tile_px=tile)
    )
    got = read(folder / "o.tif")[0]
    n_r, n_c = got.shape[1:]
    assert served.plan.geometry.scale == stride
    context = 96 - np.asarray(model(np.zeros((1, 96, 96, 3), "float32"))).shape[1] * stride
    for n, size in ((n_r, height), (n_c, width)):
        assert n * stride + context <= size < (n + 1) * stride + context  # exactly the pixels that fit
    assert np.abs(got - expected[:, :n_r, :n_c]).max() <= TOL


@pytest.mark.slow
@settings(
    max_examples=8, phases=NO_SHRINK, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(rf=st.integers(1, 12), tile=st.integers(3, 50), batch=st.integers(1, 300))
def test_property_patch_based_equals_the_whole_image(tmp_path_factory, small_rgb, rgb_window, rf, tile, batch):
    folder = tmp_path_factory.mktemp("prop_patch")
    model = (
        patch_classifier(rf)
        if rf >= 3
        else keras.Model(
            inp := keras.Input((rf, rf, 3), name="x1"),
            keras.layers.Dense(2, name="prob")(keras.layers.Flatten()(keras.layers.Rescaling(1 / 5000.0)(inp))),
        )
    )
    model.save(folder / "p.keras")
    image, _ = rgb_window
    patches, n_r, n_c, _ = reference_patches(image, rf)
    expected = model.predict(patches, batch_size=8192, verbose=0).reshape(n_r, n_c, -1).transpose(2, 0, 1)
    serve([ServeSource(small_rgb)], folder / "p.keras", folder / "o.tif", ServeOptions(tile_px=tile, batch_size=batch))
    got = read(folder / "o.tif")[0]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pixels", "regions"])
def test_hand_set_sizes_are_lowered_to_the_memory_budget(tmp_path, small_rgb, kind):
    """TILE_SIZE and BATCH_SIZE typed by hand cannot pass MEMORY_MB: they are lowered to what
    fits, the log says so, and the output is the one of the automatic sizes."""
    model = patch_classifier(16) if kind == "pixels" else fcn()
    model.save(tmp_path / "m.keras")
    fully_conv = kind == "regions"
    auto = serve(
        [ServeSource(small_rgb)],
        tmp_path / "m.keras",
        tmp_path / "auto.tif",
        ServeOptions(fully_conv=fully_conv, memory_mb=32),
    )
    log = Log()
    typed = serve(
        [ServeSource(small_rgb)],
        tmp_path / "m.keras",
        tmp_path / "typed.tif",
        ServeOptions(fully_conv=fully_conv, memory_mb=32, tile_px=100_000, batch_size=10**7),
        log,
    )
    budget = 32 * 2**20
    if kind == "pixels":  # 3 tiles of 16 x 16 x 3 float32 patches in flight in a third of the budget
        assert 9 * typed.plan.tile**2 * 16 * 16 * 3 * 4 <= budget and typed.plan.batch * 16 * 16 * 3 * 4 * 8 <= budget
        assert any(
            line.startswith("BATCH_SIZE 10000000 would pass the memory budget (MEMORY_MB 32): using ")
            for line in log.lines
        )
    else:  # 3 input bands and 2 output channels, float32, 16 x for the model's activations
        assert 16 * typed.plan.tile**2 * (3 + 2) * 4 <= budget
    assert typed.plan.tile < 100_000
    assert (
        f"TILE_SIZE 100000 would pass the memory budget (MEMORY_MB 32): using {typed.plan.tile} px; "
        "raise MEMORY_MB for larger tiles" in log.lines
    )
    small = serve(
        [ServeSource(small_rgb)],
        tmp_path / "m.keras",
        tmp_path / "small.tif",
        ServeOptions(fully_conv=fully_conv, memory_mb=32, tile_px=8, batch_size=3),
        log,
    )
    assert (small.plan.tile, small.plan.batch if kind == "pixels" else 3) == (8, 3)  # within the budget: kept
    # Other batch sizes: the same pixels and geometry; float32 kernels may differ in the last
    # digit with the batch size on some processors (AMD EPYC: 0.6277387 vs 0.62773865).
    auto_map, typed_map = read(tmp_path / "auto.tif")[0], read(tmp_path / "typed.tif")[0]
    assert auto_map.shape == typed_map.shape
    np.testing.assert_allclose(typed_map, auto_map, rtol=1e-5, atol=1e-6)
    assert auto.plan.tile <= typed.plan.tile


# -- test-time augmentation --------------------------------------------------------------


def augmented(predict, inputs: np.ndarray) -> np.ndarray:
    """The mean over the 8 flips / rotations T of T^-1(predict(T(inputs))), inputs and outputs
    [n, y, x, ...] (outputs without y, x are not turned back): the API's definition."""
    from otbtf_plugin.grid import dihedral, undo_dihedral

    total = 0.0
    for t in range(8):
        out = np.asarray(predict(np.ascontiguousarray(dihedral(inputs, t, (1, 2)))), dtype=np.float64)
        total = total + (undo_dihedral(out, t, (1, 2)) if out.ndim >= 3 else out)
    return total / 8


@pytest.mark.slow
def test_tta_patch_based_turns_each_patch_about_itself(tmp_path, small_rgb, rgb_window):
    model = patch_classifier(16)
    path = tmp_path / "m.keras"
    model.save(path)
    patches, n_r, n_c, _ = reference_patches(rgb_window[0], 16)
    expected = augmented(lambda x: model.predict(x, batch_size=4096, verbose=0), patches)
    expected = expected.reshape(n_r, n_c, 4).transpose(2, 0, 1)
    plain = model.predict(patches, batch_size=4096, verbose=0).reshape(n_r, n_c, 4).transpose(2, 0, 1)
    assert np.abs(expected - plain).max() > 1e-3  # the augmentation changes the answer
    for tile, batch in ((1000, 0), (37, 100)):
        out = tmp_path / f"tta_{tile}.tif"
        serve([ServeSource(small_rgb)], path, out, ServeOptions(tile_px=tile, batch_size=batch, tta=True))
        assert np.abs(read(out)[0] - expected).max() <= TOL


def test_tta_fully_convolutional_turns_the_whole_image(tmp_path, small_rgb, rgb_window):
    model = fcn()
    path = tmp_path / "fcn.keras"
    model.save(path)
    image = rgb_window[0].transpose(1, 2, 0)[None]
    expected = augmented(lambda x: model(x, training=False), image)[0].transpose(2, 0, 1)
    assert expected.shape == (2, 124, 144)
    for tile in (64, 50, 1000):
        out = tmp_path / f"tta_fcn_{tile}.tif"
        result = serve([ServeSource(small_rgb)], path, out, ServeOptions(fully_conv=True, tile_px=tile, tta=True))
        assert result.plan.mode == "regions" and result.plan.tta
        assert np.abs(read(out)[0] - expected).max() <= TOL


def test_tta_block_model_turns_each_block_input(tmp_path, small_rgb, rgb_window):
    model = models.block_model(3)
    model.save(tmp_path / "blocks.keras")
    image = rgb_window[0]
    n_r, n_c = (130 - 8) // 8, (150 - 8) // 8
    blocks = np.stack([image[:, r * 8 : r * 8 + 16, c * 8 : c * 8 + 16] for r in range(n_r) for c in range(n_c)])
    predicted = augmented(lambda x: model.predict(x, verbose=0), blocks.transpose(0, 2, 3, 1))
    expected = predicted.reshape(n_r, n_c, 8, 8, 2).transpose(4, 0, 2, 1, 3).reshape(2, n_r * 8, n_c * 8)
    for tile in (16, 40):
        out = tmp_path / f"tta_b{tile}.tif"
        serve([ServeSource(small_rgb)], tmp_path / "blocks.keras", out, ServeOptions(tile_px=tile, tta=True))
        assert np.abs(read(out)[0] - expected).max() <= TOL


def test_tta_refuses_to_average_classes_it_cannot_rebuild(tmp_path, small_rgb):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3), name="x")
    scores = keras.layers.Dense(3)(keras.layers.Flatten()(inp))
    keras.Model(inp, {"label": keras.ops.cast(keras.ops.argmax(scores, axis=-1), "int32")}).save(tmp_path / "c.keras")
    with pytest.raises(ModelError, match=r"output label holds int32 values .* cannot be averaged"):
        serve([ServeSource(small_rgb)], tmp_path / "c.keras", tmp_path / "out.tif", ServeOptions(tta=True))
    assert not (tmp_path / "out.tif").exists()


# -- blended tiles (OVERLAP) -------------------------------------------------------------


def test_overlap_changes_nothing_for_a_translation_exact_model(tmp_path, small_rgb, rgb_window):
    model = fcn()
    path = tmp_path / "fcn.keras"
    model.save(path)
    expected = np.asarray(model(rgb_window[0].transpose(1, 2, 0)[None], training=False))[0].transpose(2, 0, 1)
    for tile in (50, 64):
        out = tmp_path / f"o{tile}.tif"
        result = serve([ServeSource(small_rgb)], path, out, ServeOptions(fully_conv=True, tile_px=tile, overlap=8))
        assert result.plan.overlap == 8 and result.plan.tile == tile
        assert np.abs(read(out)[0] - expected).max() <= TOL


def zero_padded(seed=4):
    """'same' convolutions: the output near a tile's edge sees zeros, so tiles show seams."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, None, 3), name="x")
    h = keras.layers.Conv2D(6, 5, padding="same", activation="relu")(keras.layers.Rescaling(1 / 5000.0)(inp))
    return keras.Model(inp, keras.layers.Conv2D(2, 5, padding="same", name="y")(h))


def test_overlap_blends_away_the_seams_of_a_zero_padded_model(tmp_path, small_rgb, rgb_window):
    model = zero_padded()
    path = tmp_path / "same.keras"
    model.save(path)
    image = rgb_window[0]  # (3, 130, 150); 'same' padding: the output grid is the image's
    whole = np.asarray(model(image.transpose(1, 2, 0)[None], training=False))[0].transpose(2, 0, 1)
    tile, margin = 50, 8

    # The definition, written out independently: every 50 px tile grown by 8 px (within the
    # image), run alone, weighted by a smooth step over 16 px from each edge that faces a
    # neighbour, and the weighted mean taken.
    def ramp(start, size, total):
        centre = np.arange(size) + 0.5
        rise = np.clip(centre / (2 * margin), 0, 1)
        fall = np.clip((size - centre) / (2 * margin), 0, 1)
        w = np.ones(size)
        if start > 0:
            w = np.minimum(w, rise * rise * (3 - 2 * rise))
        if start + size < total:
            w = np.minimum(w, fall * fall * (3 - 2 * fall))
        return w

    sums, weights = np.zeros_like(whole, dtype=np.float64), np.zeros(whole.shape[1:])
    for row in range(0, 130, tile):
        for col in range(0, 150, tile):
            r0, r1 = max(row - margin, 0), min(row + tile + margin, 130)
            c0, c1 = max(col - margin, 0), min(col + tile + margin, 150)
            part = np.asarray(model(image[:, r0:r1, c0:c1].transpose(1, 2, 0)[None], training=False))[0]
            w = np.outer(ramp(r0, r1 - r0, 130), ramp(c0, c1 - c0, 150))
            sums[:, r0:r1, c0:c1] += part.transpose(2, 0, 1) * w
            weights[r0:r1, c0:c1] += w
    expected = sums / weights

    plain, blended = tmp_path / "plain.tif", tmp_path / "blended.tif"
    serve([ServeSource(small_rgb)], path, plain, ServeOptions(fully_conv=True, tile_px=tile))
    result = serve([ServeSource(small_rgb)], path, blended, ServeOptions(fully_conv=True, tile_px=tile, overlap=margin))
    assert result.plan.mode == "regions" and result.tiles == 9
    assert np.abs(read(blended)[0] - expected).max() <= TOL
    # The seams: across the tile boundary at column 50, plain tiles jump; blended ones follow the
    # whole-image answer far more closely.
    seam = (slice(None), slice(None), slice(46, 54))
    plain_error = np.abs(read(plain)[0][seam] - whole[seam]).max()
    blended_error = np.abs(read(blended)[0][seam] - whole[seam]).max()
    assert plain_error > 5 * blended_error, (plain_error, blended_error)


def test_overlap_leaves_patch_models_alone_and_refuses_classes(tmp_path, small_rgb):
    patch_classifier(16).save(tmp_path / "p.keras")
    log = Log()
    plain = serve([ServeSource(small_rgb)], tmp_path / "p.keras", tmp_path / "a.tif", ServeOptions(tile_px=40))
    over = serve(
        [ServeSource(small_rgb)],
        tmp_path / "p.keras",
        tmp_path / "b.tif",
        ServeOptions(tile_px=40, overlap=6),
        progress=log,
    )
    assert over.plan.overlap == 0 and any("nothing to blend" in line for line in log.lines)
    assert np.array_equal(read(tmp_path / "a.tif")[0], read(tmp_path / "b.tif")[0]) and plain.tiles == over.tiles
    inp = keras.Input((None, None, 3), name="x")
    scores = keras.layers.Conv2D(3, 3)(inp)
    keras.Model(inp, {"label": keras.ops.cast(keras.ops.argmax(scores, axis=-1), "int32")}).save(tmp_path / "c.keras")
    with pytest.raises(ModelError, match=r"output label holds int32 values .* cannot be blended"):
        serve(
            [ServeSource(small_rgb)], tmp_path / "c.keras", tmp_path / "c.tif", ServeOptions(fully_conv=True, overlap=4)
        )


def _same_whatever_the_tiles(tmp_path, sources, model_path, options: dict, tiles=(1000, 29)):
    results = []
    for tile in tiles:
        out = tmp_path / f"t{tile}.tif"
        serve(sources, model_path, out, ServeOptions(tile_px=tile, **options))
        results.append(read(out)[0])
    assert results[0].shape == results[1].shape
    assert np.abs(results[0] - results[1]).max() <= TOL
    return results[0]


@pytest.mark.slow
def test_tta_and_overlap_with_two_resolutions_scale_2_and_nodata(tmp_path, small_rgb):
    """TTA (and OVERLAP) with what else serving does: two sources of different resolutions,
    a strided model (spacing scale 2), nodata: the result still does not depend on the tiles."""
    keras.utils.set_random_seed(3)
    a, b = keras.Input((16, 16, 1), name="x30"), keras.Input((8, 8, 1), name="x60")
    fa = keras.layers.Flatten()(keras.layers.Rescaling(1 / 5000.0)(a))
    fb = keras.layers.Flatten()(keras.layers.Rescaling(1 / 5000.0)(b))
    keras.Model([a, b], keras.layers.Dense(3, name="z")(keras.layers.Concatenate()([fa, fb]))).save(
        tmp_path / "two.keras"
    )
    two = _same_whatever_the_tiles(
        tmp_path, [ServeSource(B2_30), ServeSource(B2_60)], tmp_path / "two.keras", {"tta": True}
    )
    plain = serve([ServeSource(B2_30), ServeSource(B2_60)], tmp_path / "two.keras", tmp_path / "p.tif")
    assert np.abs(read(plain.output)[0] - two).max() > 1e-4  # the augmentation is applied
    fcn(context_kernels=(4, 3), stride=2).save(tmp_path / "strided.keras")
    for extra in ({"tta": True}, {"overlap": 6}, {"tta": True, "overlap": 6}):
        _same_whatever_the_tiles(
            tmp_path,
            [ServeSource(small_rgb)],
            tmp_path / "strided.keras",
            {"fully_conv": True, **extra},
            tiles=(1000, 24),
        )
    _same_whatever_the_tiles(
        tmp_path,
        [ServeSource(small_rgb, nodata=0)],
        tmp_path / "strided.keras",
        {"fully_conv": True, "tta": True, "background": -1},
        tiles=(1000, 24),
    )


def test_blended_tiles_are_sized_for_the_memory_budget():
    from otbtf_plugin.serving.planning import _blended_tile

    notes: list[str] = []
    # 64 MiB: a quarter (16 MiB) for a row of waiting tiles of 30000 px x (2 bands + weights) x 8 bytes:
    # 16777216 // (30000 * 3 * 8) = 23 px tall tiles, noted since TILE_SIZE asked for 512
    assert _blended_tile(ServeOptions(memory_mb=64, tile_px=512, overlap=8), 512, 8, 30000, 2, notes) == 23
    assert "using 23 px" in notes[0]
    # chosen from the budget (1024 px): the grown tile takes the tile's place, 1024 - 2 x 8
    assert _blended_tile(ServeOptions(memory_mb=512, overlap=8), 1024, 8, 2000, 2, []) == 1008
    # never below 2 x OVERLAP: a grown tile reaches only its neighbours
    assert _blended_tile(ServeOptions(memory_mb=32, overlap=40), 100, 40, 100000, 4, []) == 80


def test_results_never_depend_on_threads(tmp_path, monkeypatch):
    """Reader threads (each with its own datasets), GDAL's decoding threads (the deflate-
    compressed Landsat 8 sample, 256 px blocks) and its encoding threads (ZSTD output): the
    served values are those of one thread doing everything, bit for bit."""
    from otbtf_plugin.execution import pipeline
    from otbtf_plugin.serving import output

    fcn().save(tmp_path / "f.keras")
    options = ServeOptions(fully_conv=True, tile_px=128)

    def served(name, executor, cores):
        monkeypatch.setattr(pipeline, "cpu_cores", lambda: cores)
        monkeypatch.setattr(output, "cpu_cores", lambda: cores)
        result = serve([ServeSource(RGB)], tmp_path / "f.keras", tmp_path / f"{name}.tif", options, executor=executor)
        return read(tmp_path / f"{name}.tif")[0], result.plan

    alone, plan = served("alone", LocalThreads(1, 1), 1)
    assert "num_threads" not in output.output_profile(plan, None, 1, "float32", "zstd")
    for name, executor, cores in (("readers", LocalThreads(2, 2), 2), ("many", LocalThreads(3, 5), 12)):
        assert np.array_equal(served(name, executor, cores)[0], alone), name
    # what the last run used (12 cores): 4 decoding threads per read, 12 encoding threads
    assert pipeline.decoding_threads(LocalThreads(3, 5)) == 4
    assert output.output_profile(plan, None, 1, "float32", "zstd")["num_threads"] == "12"
