"""Execution: where tiles are computed. ``pipeline``: the tile work's contract (``TileWork``)
and this machine's executor (``LocalThreads``); ``cluster``: a Dask cluster's executor. They
run any tile work and know no workflow (serving, classification)."""
