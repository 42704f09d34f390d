"""What QGIS' own migration script (scripts/pyqt5_to_pyqt6 of the QGIS repository) rewrites
for Qt 6, kept out of the code that imports Qt: the rules it applies, as a test that needs
neither QGIS nor PyQt6. (The script itself, run by hand on this tree with PyQt6 6.11's enum
table, reported nothing to change: README, "QGIS 4".)"""

import ast
import re

import pytest

from common import ROOT

QT_FILES = sorted([*ROOT.joinpath("plugin").rglob("*.py"), *ROOT.joinpath("processing_provider").rglob("*.py")])
QT_FILES.append(ROOT / "__init__.py")
# Qt classes whose enum values must be written scoped (Class.Enum.Value) for PyQt6; QGIS' own
# classes keep their old unscoped names on Qt 6 (python/core/auto_additions).
QT_CLASSES = (
    *("Qt", "QDialogButtonBox", "QDialog", "QMessageBox", "QSizePolicy", "QFrame", "QAbstractItemView"),
    *("QHeaderView", "QLineEdit", "QFileDialog", "QPalette", "QFont", "QEvent"),
)


@pytest.mark.parametrize("path", QT_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pyqt5_only_names(path):
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("PyQt5"):
            problems.append(f"line {node.lineno}: import from {node.module} (use qgis.PyQt)")
        if isinstance(node, ast.Attribute) and node.attr == "exec_":
            problems.append(f"line {node.lineno}: exec_() (use exec())")
        if isinstance(node, ast.Name) and node.id == "qApp":
            problems.append(f"line {node.lineno}: qApp (use QApplication.instance())")
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in QT_CLASSES
            and re.fullmatch(r"[A-Z][A-Za-z0-9]*", node.attr)
        ):
            parent_is_scope = any(
                isinstance(p, ast.Attribute) and p.value is node for p in ast.walk(tree)
            )  # Class.Enum.Value: the Enum part
            if not parent_is_scope:
                scoped = f"{node.value.id}.<Enum>.{node.attr}"
                problems.append(f"line {node.lineno}: {node.value.id}.{node.attr} unscoped (Qt 6: {scoped})")
    assert not problems, problems


def test_qvariant_types_only_where_qgis_has_no_qmetatype():
    """QVariant.String and friends are gone in Qt 6: only the branch for QGIS < 3.38 uses them."""
    common = (ROOT / "processing_provider" / "algorithms" / "common.py").read_text(encoding="utf-8")
    users = [path for path in QT_FILES if re.search(r"QVariant\.[A-Z]", path.read_text(encoding="utf-8"))]
    assert users == [ROOT / "processing_provider" / "algorithms" / "common.py"]
    branch = common[common.index("if Qgis.QGIS_VERSION_INT >= 33800:") :]
    assert branch.index("QMetaType.Type") < branch.index("QVariant.String")


def test_deprecated_qgis_calls_only_where_qgis_has_no_replacement():
    """QGIS 3.32+ deprecates parameterAsFields (parameterAsStrings replaces it; Debian unstable's
    QGIS 3.44 warns): only the branch for older QGIS calls it."""
    users = [path for path in QT_FILES if "parameterAsFields" in path.read_text(encoding="utf-8")]
    assert users == [ROOT / "processing_provider" / "algorithms" / "common.py"]
    common = users[0].read_text(encoding="utf-8")
    branch = common[common.index("if Qgis.QGIS_VERSION_INT >= 33200:") :]
    assert branch.index("parameterAsStrings") < branch.index("parameterAsFields")
