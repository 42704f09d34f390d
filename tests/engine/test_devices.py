"""DEVICE (auto, cpu, gpu): the choice against what the runtime sees. These machines have no
GPU: the runtimes are told they have one (their listing faked), and the real runtimes then
show what happens when the GPU is listed but cannot start."""

import numpy as np
import pytest
import rasterio

from common import RGB, Log
from otbtf_plugin.errors import InputError
from otbtf_plugin.models import devices, runtimes
from otbtf_plugin.models.devices import onnx_device, onnx_providers, tensorflow_device

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


def test_the_providers_asked_of_onnxruntime():
    assert onnx_providers([CPU], "auto") == [CPU]
    assert onnx_providers([CPU], "cpu") == [CPU]
    assert onnx_providers(["TensorrtExecutionProvider", CUDA, CPU], "auto") == [CUDA, CPU]
    assert onnx_providers([CUDA, CPU], "cpu") == [CPU]
    assert onnx_providers(["DmlExecutionProvider", CPU], "gpu") == ["DmlExecutionProvider", CPU]
    with pytest.raises(InputError, match=r"^DEVICE gpu: onnxruntime here has no GPU .*it has CPUExecutionProvider.*"
                       r"onnxruntime-gpu"):  # fmt: skip
        onnx_providers([CPU], "gpu")


def test_what_the_log_says_is_what_the_session_runs_on():
    assert onnx_device([CPU], [CPU], "auto") == "CPU"
    assert onnx_device([CUDA, CPU], [CUDA, CPU], "gpu") == "GPU (CUDAExecutionProvider)"
    assert onnx_device([CUDA, CPU], [CPU], "auto") == "CPU (CUDAExecutionProvider is listed but did not start)"
    with pytest.raises(InputError, match="DEVICE gpu: onnxruntime lists CUDAExecutionProvider but could not start"):
        onnx_device([CUDA, CPU], [CPU], "gpu")


def test_the_tensorflow_device():
    assert tensorflow_device([], "auto") == ("/CPU:0", "CPU")
    assert tensorflow_device(["/physical_device:GPU:0"], "cpu") == ("/CPU:0", "CPU")
    assert tensorflow_device(["/physical_device:GPU:0"], "auto") == ("/GPU:0", "GPU (/physical_device:GPU:0)")
    with pytest.raises(InputError, match=r"TensorFlow here sees no GPU: the plugin installs tensorflow-cpu"):
        tensorflow_device([], "gpu")
    with pytest.raises(InputError, match=r"DEVICE 'cuda' is not a device: use one of auto, cpu, gpu"):
        devices.check_device("cuda")


@pytest.fixture
def onnx_file(tmp_path):
    import onnx_models

    return onnx_models.save(onnx_models.conv_model(), tmp_path / "conv.onnx")


def test_a_listed_gpu_that_cannot_start_falls_back_or_fails(onnx_file, monkeypatch):
    """onnxruntime told it has CUDA (this machine has none): the real session runs on the CPU,
    which auto says, and gpu refuses."""
    from otbtf_plugin.models.onnx_backend import load_onnx

    ort = runtimes.import_onnxruntime()
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):  # onnxruntime's own warning
        model = load_onnx(onnx_file, device="auto")
    assert model.device == "CPU (CUDAExecutionProvider is listed but did not start)"
    with pytest.raises(InputError, match="could not start it"), pytest.warns(UserWarning):
        load_onnx(onnx_file, device="gpu")
    assert load_onnx(onnx_file, device="cpu").device == "CPU"


def test_serving_says_the_device_and_gpu_without_one_fails_before_any_work(onnx_file, tmp_path):
    from otbtf_plugin.serving import ServeOptions, ServeSource, serve

    log = Log()
    serve([ServeSource(RGB)], onnx_file, tmp_path / "o.tif", ServeOptions(fully_conv=True), log)
    assert "device: CPU" in log.lines
    with pytest.raises(InputError, match="DEVICE gpu: onnxruntime here has no GPU"):
        serve([ServeSource(RGB)], onnx_file, tmp_path / "g.tif", ServeOptions(fully_conv=True, device="gpu"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.onnx", "o.tif"]


def test_a_tensorflow_model_on_a_listed_gpu_is_placed_there(tmp_path, monkeypatch):
    """TensorFlow told it has a GPU: the calls run under tf.device('/GPU:0'), which TensorFlow
    places on the CPU it has (soft placement); the values are those of DEVICE cpu."""
    tf = pytest.importorskip("tensorflow")
    import models

    from otbtf_plugin.serving import ServeOptions, ServeSource, serve

    models.fcn().save(tmp_path / "f.keras")
    options = ServeOptions(fully_conv=True, device="cpu")
    serve([ServeSource(RGB)], tmp_path / "f.keras", tmp_path / "cpu.tif", options)
    placed = []
    real_device = tf.device
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["/physical_device:GPU:0"])
    monkeypatch.setattr(tf, "device", lambda name: placed.append(name) or real_device("/CPU:0"))
    log = Log()
    serve([ServeSource(RGB)], tmp_path / "f.keras", tmp_path / "gpu.tif", ServeOptions(fully_conv=True), log)
    assert "device: GPU (/physical_device:GPU:0)" in log.lines and set(placed) == {"/GPU:0"}
    with rasterio.open(tmp_path / "cpu.tif") as a, rasterio.open(tmp_path / "gpu.tif") as b:
        assert np.array_equal(a.read(), b.read())


def test_training_on_gpu_without_one_fails_before_reading_anything(tmp_path):
    pytest.importorskip("tensorflow")
    from otbtf_plugin.training import TrainConfig, train

    with pytest.raises(InputError, match="DEVICE gpu: TensorFlow here sees no GPU"):
        train(TrainConfig([RGB], RGB, tmp_path / "model", device="gpu"))
    assert list(tmp_path.iterdir()) == []
