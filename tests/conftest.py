"""Test-wide settings. Engine tests (tests/engine) import ``otbtf_plugin`` and
never qgis; QGIS tests (tests/qgis) load the whole plugin as ``otbtf``."""

from hypothesis import settings

import common  # noqa: F401  (puts the repository root on sys.path)

# No deadlines: speed lives in `make bench`, never in tests.
settings.register_profile("otbtf", deadline=None, max_examples=100)
settings.load_profile("otbtf")
