"""QGIS styles (.qml) written beside outputs, as plain XML (no qgis import): QGIS
applies a same-named .qml when it opens the raster."""

from __future__ import annotations

import html
from pathlib import Path

from .outputs import StagedOutputs, staged_or_now

# Colours for common land-cover names; other classes take the palette in order.
NAMED = {
    "water": "#2c7fb8",
    "tree": "#1b7837",
    "forest": "#1b7837",
    "crop": "#e6c229",
    "cropland": "#e6c229",
    "developed": "#d7301f",
    "urban": "#d7301f",
    "built": "#d7301f",
    "grass": "#91cf60",
    "bare": "#c2a383",
    "soil": "#c2a383",
    "cloud": "#f0f0f0",
    "snow": "#ffffff",
    "shadow": "#404040",
}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def class_colours(classes: list[dict]) -> list[str]:
    colours, spare = [], iter(PALETTE * (1 + len(classes) // len(PALETTE)))
    for item in classes:
        colours.append(NAMED.get(str(item["name"]).lower()) or next(spare))
    return colours


def _write_qml(raster: str | Path, renderer: str, staged: StagedOutputs | None) -> Path:
    """``renderer`` (a ``<rasterrenderer>`` element) as the .qml beside ``raster``: staged
    with the raster (renamed with it) when ``staged`` is given, else written now."""
    text = f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22" styleCategories="AllStyleCategories">
  <pipe>
{renderer}
  </pipe>
</qgis>
"""
    path = Path(raster).with_suffix(".qml")
    with staged_or_now(staged) as group:
        group.file(path).write_text(text, encoding="utf-8")
    return path


def write_class_style(raster: str | Path, classes: list[dict], staged: StagedOutputs | None = None) -> Path:
    """A paletted style for a class map: ``classes`` = ``[{"code": 1, "name": "water"}, ...]``."""
    entries = "\n".join(
        f'        <paletteEntry value="{int(c["code"])}" color="{colour}" alpha="255" '
        f'label="{html.escape(str(c["name"]), quote=True)}"/>'
        for c, colour in zip(classes, class_colours(classes), strict=True)
    )
    return _write_qml(
        raster,
        f"""    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1"
                    nodataColor="">
      <rasterTransparency/>
      <colorPalette>
{entries}
      </colorPalette>
    </rasterrenderer>""",
        staged,
    )


def write_confidence_style(raster: str | Path, staged: StagedOutputs | None = None) -> Path:
    """A red-yellow-green gradient from 0 to 1 for a confidence (probability) map."""
    stops = [(0.0, "#d7191c"), (0.5, "#ffffbf"), (1.0, "#1a9641")]
    items = "\n".join(f'          <item value="{v}" color="{c}" alpha="255" label="{v:g}"/>' for v, c in stops)
    return _write_qml(
        raster,
        f"""    <rasterrenderer type="singlebandpseudocolor" band="1" opacity="1" alphaBand="-1"
                    classificationMin="0" classificationMax="1" nodataColor="">
      <rasterTransparency/>
      <rastershader>
        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="0" minimumValue="0"
                         maximumValue="1">
{items}
        </colorrampshader>
      </rastershader>
    </rasterrenderer>""",
        staged,
    )
