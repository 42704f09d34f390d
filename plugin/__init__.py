"""The QGIS plugin around the Processing provider: its menu and toolbar entries, the
dependency installer task and the *Apply a model to a layer* dialog. Only QGIS desktop
(and qgis_process, which starts it headless) uses it; the provider does not import it."""
