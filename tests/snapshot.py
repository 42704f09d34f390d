"""Byte-for-byte snapshots of the user's files, for tests that check nothing was lost."""

import hashlib
from pathlib import Path


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root`` (or ``root`` itself): relative path -> (sha256, mode)."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {
        str(p.relative_to(root.parent if root.is_file() else root)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mode,
        )
        for p in files
    }


def assert_untouched(before: dict, root: Path) -> None:
    """Every file of ``before`` is still there, byte for byte, and nothing was added but the
    statistics that GDAL caches beside a raster QGIS opened (``.aux.xml``)."""
    after = snapshot(root)
    assert {name: after.get(name) for name in before} == before
    assert [name for name in after if name not in before and not name.endswith(".aux.xml")] == []
