"""The rooms of docs/architecture.md and what each may import, read from the code itself
(every import, also those inside functions): this test fails when a change breaks them."""

import ast
from pathlib import Path

import pytest

from common import ROOT

PACKAGES = ("otbtf_plugin", "processing_provider", "plugin")


def modules() -> dict[str, Path]:
    """Every module of the project, by dotted name (the root package is ``otbtf`` once
    installed; here names start at its sub-packages)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """The names a module imports, anywhere in it, relative imports resolved; a ``from X
    import y`` counts as importing ``X.y`` too (``y`` may be a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                if len(base) == 0:  # above the sub-packages: the root package (otbtf)
                    target = node.module or ""
                else:
                    target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


MODULES = modules()
GRAPH = {name: {i for i in imports(name, path) if i in MODULES and i != name} for name, path in MODULES.items()}
EXTERNAL = {name: imports(name, path) for name, path in MODULES.items()}


def reaches(start: str, targets: set[str]) -> list[str] | None:
    """An import path from ``start`` to any of ``targets``, or None."""
    seen, stack = {start}, [[start]]
    while stack:
        trail = stack.pop()
        for following in sorted(GRAPH[trail[-1]]):
            if following in targets:
                return [*trail, following]
            if following not in seen:
                seen.add(following)
                stack.append([*trail, following])
    return None


def test_the_reader_sees_the_modules():
    assert {
        "otbtf_plugin.serving",
        "otbtf_plugin.serving.planning",
        "otbtf_plugin.execution.pipeline",
        "otbtf_plugin.execution.cluster",
        "processing_provider.provider",
        "plugin.plugin",
    } <= set(MODULES)
    assert "otbtf_plugin.execution.pipeline" in GRAPH["otbtf_plugin.serving.run"]
    assert "otbtf_plugin.execution.cluster" in GRAPH["processing_provider.algorithms.common"]  # inside a function


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith("otbtf_plugin")))
def test_the_engine_imports_no_qgis_and_nothing_above_it(name):
    outside = sorted(
        i
        for i in EXTERNAL[name]
        if i.split(".")[0] in ("qgis", "processing", "PyQt5", "PyQt6")
        or i.startswith(("processing_provider", "plugin"))
    )
    assert not outside, f"{name} imports {outside}: the engine knows no QGIS"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith("processing_provider")))
def test_the_provider_does_not_import_the_plugin_package(name):
    assert not [i for i in GRAPH[name] if i.startswith("plugin")], f"{name} imports the desktop plugin package"


@pytest.mark.parametrize(
    "name", sorted(m for m in MODULES if m.startswith("otbtf_plugin") and m != "otbtf_plugin.execution.cluster")
)
def test_only_the_dask_executor_knows_dask(name):
    assert "otbtf_plugin.execution.cluster" not in GRAPH[name], f"{name} imports the Dask executor"
    assert not [i for i in EXTERNAL[name] if i.split(".")[0] in ("dask", "distributed")], f"{name} imports Dask"


def test_the_pipeline_and_the_executors_know_no_work():
    work = {
        m
        for m in MODULES
        if m.startswith(
            (
                "otbtf_plugin.serving",
                "otbtf_plugin.image_classification",
                "otbtf_plugin.classifier_training",
                "otbtf_plugin.ground_truth",
                "otbtf_plugin.features",
                "otbtf_plugin.classifiers",
                "otbtf_plugin.models",
                "otbtf_plugin.training",
            )
        )
    }
    for name in ("otbtf_plugin.execution.pipeline", "otbtf_plugin.execution.cluster"):
        assert reaches(name, work) is None, reaches(name, work)


def test_geometry_is_pure():
    """grid.py: numbers in, numbers out: no raster, vector or model library, and of the
    project only its errors."""
    roots = {i.split(".")[0] for i in EXTERNAL["otbtf_plugin.grid"]}
    assert roots <= {"__future__", "collections", "dataclasses", "math", "numpy", "typing", "otbtf_plugin"}, roots
    assert GRAPH["otbtf_plugin.grid"] <= {"otbtf_plugin.errors"}


def test_validation_rules_are_pure():
    """validation.py: which samples validate, from class codes and groups; no I/O."""
    roots = {i.split(".")[0] for i in EXTERNAL["otbtf_plugin.validation"]}
    assert roots <= {"__future__", "dataclasses", "numpy", "otbtf_plugin"}, roots
    assert GRAPH["otbtf_plugin.validation"] <= {"otbtf_plugin.errors"}


def test_the_workflows_live_in_modules_named_for_them():
    """A package's __init__ is its face: importing serving.planning or training.targets loads
    no tiles, pipeline, writer or network code (the workflows are in run.py, imported when
    first asked for)."""
    for package, run in (
        ("otbtf_plugin.serving", "otbtf_plugin.serving.run"),
        ("otbtf_plugin.training", "otbtf_plugin.training.run"),
    ):
        assert run in MODULES
        assert run not in GRAPH[package], f"{package}/__init__.py imports its workflow at once"
        assert not [i for i in GRAPH[package] if i.startswith(("otbtf_plugin.execution", "otbtf_plugin.raster"))]


def test_serving_planning_needs_no_tiles_or_output():
    """The plan is geometry decided against the model: it does not reach tile computation,
    the output or the pipeline (a test of planning needs neither GDAL writing nor threads)."""
    rooms = {
        "otbtf_plugin.serving.inference",
        "otbtf_plugin.serving.output",
        "otbtf_plugin.execution.pipeline",
        "otbtf_plugin.serving.run",
    }
    assert reaches("otbtf_plugin.serving.planning", rooms) is None, reaches("otbtf_plugin.serving.planning", rooms)


def test_no_import_cycle():
    """No circle of imports anywhere (imports inside functions count: they do not hide one)."""
    cycles = []
    for name in sorted(GRAPH):
        path = reaches(name, {name})
        if path:
            cycles.append(" -> ".join(path))
    assert not cycles, cycles[0]


def test_the_engine_has_one_import_name():
    """Tests, scripts, Dask workers, the provider and the desktop parts all import the engine
    as ``otbtf_plugin``: no module climbs out of its package to reach it (``from ...otbtf_plugin``
    made it ``otbtf.otbtf_plugin`` in QGIS, a second copy of every module and its state)."""
    climbing = []
    for name, path in MODULES.items():
        if name.startswith("otbtf_plugin"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level and (node.module or "").startswith("otbtf_plugin"):
                climbing.append(f"{name}: from {'.' * node.level}{node.module}")
    assert climbing == []
    root = (ROOT / "__init__.py").read_text(encoding="utf-8")
    assert "otbtf_plugin" in root and "EngineFinder" in root  # QGIS' entry point exposes that name


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith("otbtf_plugin")))
def test_the_engine_installs_nothing(name):
    """Installing packages (pip, site folders, .pth files) is the plugin's installer's job
    (plugin/installer.py, QGIS-free, also run by make setup): the engine only checks what is
    there (otbtf_plugin.packages)."""
    assert "plugin.installer" not in GRAPH[name]
    assert not {"site", "pip"} & {i.split(".")[0] for i in EXTERNAL[name]}, f"{name} imports site or pip"


def test_the_models_are_together():
    """Loading, serving's view of a model, the metadata contract, Deepness and the runtimes
    live in otbtf_plugin/models/, nowhere else."""
    flat = {m.rpartition(".")[2] for m in MODULES if m.count(".") == 1 and m.startswith("otbtf_plugin.")}
    assert not flat & {
        "model",
        "model_metadata",
        "served_model",
        "onnx_model",
        "deepness",
        "keras_layers",
        "runtimes",
        "deps",
    }, flat
    assert {"otbtf_plugin.models.loading", "otbtf_plugin.models.served", "otbtf_plugin.models.metadata"} <= set(MODULES)


def _opens_for_writing(node: ast.AST) -> bool:
    """``rasterio.open(path, "w", ...)`` (or ``mode="w"``/``"w+"``/``"r+"``)."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "open"):
        return False
    if not (isinstance(node.func.value, ast.Name) and node.func.value.id == "rasterio"):
        return False
    modes = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)]
    modes += [k.value.value for k in node.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)]
    return any(mode in ("w", "w+", "r+") for mode in modes)


def test_only_the_writer_process_writes_rasters():
    """Raster pixels are written in the writer process only (docs/architecture.md, GDAL from
    several threads): a write in the engine's own process could lose another run's pixels."""
    writers = [
        name
        for name, path in MODULES.items()
        if any(_opens_for_writing(node) for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))
    ]
    assert writers == ["otbtf_plugin.raster_writer"]


def _enters_a_dataset(node: ast.AST) -> bool:
    """``x.enter_context(open_raster(...))`` or ``x.enter_context(rasterio.open(...))``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "enter_context"):
        return False
    inner = node.args[0] if node.args else None
    if not isinstance(inner, ast.Call):
        return False
    called = inner.func
    return (isinstance(called, ast.Name) and called.id == "open_raster") or (
        isinstance(called, ast.Attribute)
        and called.attr == "open"
        and isinstance(called.value, ast.Name)
        and called.value.id == "rasterio"
    )


def test_datasets_on_an_exit_stack_are_closed_with_close_with():
    """rasterio 1.5 (QGIS 3.44, Debian unstable) fails to close, from another thread, a dataset
    entered as a context: reader threads open their datasets and the run's thread closes them,
    so a stack takes a dataset through raster.close_with, never enter_context."""
    entering = [
        name
        for name, path in MODULES.items()
        if any(_enters_a_dataset(node) for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))
    ]
    assert entering == []
    assert _enters_a_dataset(ast.parse("stack.enter_context(open_raster(p, 2))").body[0].value)
    assert _enters_a_dataset(ast.parse("stack.enter_context(rasterio.open(p))").body[0].value)
