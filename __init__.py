"""QGIS entry point of the otbtf plugin.

Nothing heavy is imported here: QGIS imports this package at start-up. It puts the plugin's
installed packages on ``sys.path`` (:func:`activate_packages`), and makes the engine
importable under its one name, ``otbtf_plugin`` (as in scripts, tests and on Dask workers),
and nothing else of this folder: the provider and the desktop parts import the engine by
that name, so that its modules (and their state, such as the GDAL lock) exist once.
"""

import importlib
import importlib.abc
import importlib.machinery
import os
import sys

ENGINE = "otbtf_plugin"
_FOLDER = os.path.dirname(os.path.abspath(__file__))


class EngineFinder(importlib.abc.MetaPathFinder):
    """Finds the package ``otbtf_plugin`` in this plugin's folder (its submodules are found
    through the package as usual); answers for no other name."""

    folder = _FOLDER

    def find_spec(self, name, path=None, target=None):
        if name != ENGINE:
            return None
        return importlib.machinery.PathFinder.find_spec(name, [self.folder])


def expose_engine() -> None:
    """Put the finder first on ``sys.meta_path`` (once): the engine of this plugin wins over
    any other folder that might hold a package of that name. Like the engine's modules, which
    QGIS does not unload (they are not under the plugin's package name), it stays for the
    session: a plugin reloaded by hand keeps the engine it had loaded."""
    if not any(type(finder).__name__ == "EngineFinder" for finder in sys.meta_path):
        sys.meta_path.insert(0, EngineFinder())


def activate_packages() -> None:
    """Put the folder where the plugin installed its Python packages on ``sys.path`` now, when
    QGIS imports the plugin: before anything of ours imports numpy, and without a ``.pth``
    that would give them to every Python program of the machine (``plugin/installer.py``).
    Nothing to do where this file is imported as a plain module, not as the plugin's package
    (pytest in a clone whose folder name is no Python name)."""
    if __package__:
        importlib.import_module(".plugin.installer", __package__).activate()


expose_engine()
activate_packages()


def classFactory(iface):
    """Called by QGIS (desktop: with its interface; qgis_process: iface may be None)."""
    # Imported as "from package import module" so that QGIS' import hook records
    # both the package and the module, and unloads both.
    from .plugin import plugin

    return plugin.OtbtfPlugin(iface)
