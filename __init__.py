"""QGIS entry point of the otbtf plugin.

Nothing heavy is imported here: QGIS imports this package at start-up.
"""


def classFactory(iface):
    """Called by QGIS (desktop: with its interface; qgis_process: iface may be None)."""
    # Imported as "from package import module" so that QGIS' import hook records
    # both the package and the module, and unloads both.
    from .plugin import plugin

    return plugin.OtbtfPlugin(iface)
