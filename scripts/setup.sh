#!/usr/bin/env bash
# Installs what the project needs on Debian 12 or 13, then checks it. Idempotent:
# a second run only verifies (a few seconds).
#   - Debian packages: QGIS, GDAL stack, rasterio, geopandas, Xvfb, Orfeo ToolBox;
#   - the pinned Python packages of requirements.txt (TensorFlow...) into the
#     plugin's system folder (/usr/local/lib/otbtf/python3.X) plus a .pth, so that
#     QGIS, qgis_process, scripts and tests all import them (as root; as another
#     user, into ~/.local/share/otbtf/python3.X);
#   - the development tools of requirements-dev.txt into .devdeps/python3.X.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=/usr/bin/python3
APT_REQUIRED=(qgis python3-qgis qgis-providers gdal-bin python3-gdal python3-rasterio
              python3-geopandas python3-shapely python3-rtree python3-pip
              xvfb xauth x11-apps imagemagick make git)
APT_OPTIONAL=(otb-bin libotb-apps)   # the Orfeo ToolBox: peer reference in tests and benchmarks

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for package in "${APT_REQUIRED[@]}"; do
    installed "$package" || missing+=("$package")
done
# An optional package this release does not have (otb-bin is gone after Debian 12) is not asked
# for again on every run: only when the required ones are missing too, or when apt knows it.
for package in "${APT_OPTIONAL[@]}"; do
    if ! installed "$package" && { ((${#missing[@]})) || apt-cache show "$package" >/dev/null 2>&1; }; then
        missing+=("$package")
    fi
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: missing Debian packages: ${missing[*]}" >&2
        echo "setup: run 'sudo make setup' (or: sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    available=()
    for package in "${missing[@]}"; do
        if apt-cache show "$package" >/dev/null 2>&1; then
            available+=("$package")
        elif [[ " ${APT_REQUIRED[*]} " == *" $package "* ]]; then
            echo "setup: Debian package $package is not available on this release" >&2
            exit 1
        else
            echo "setup: optional package $package is not available here; skipping it"
        fi
    done
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${available[@]}"
fi

pyver=$($PY -c 'import sys; print(f"python{sys.version_info.major}.{sys.version_info.minor}")')
if [[ $(id -u) -eq 0 ]]; then
    $PY -m plugin.installer install --system
else
    $PY -m plugin.installer install
fi
$PY -m plugin.installer install --requirements requirements-dev.txt --target ".devdeps/$pyver"
$PY -m plugin.installer check
