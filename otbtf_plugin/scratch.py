"""Temporary files and folders written beside an output.

Every temporary name carries the host and the process id of its owner:
``.<stem>.partial-<host>-<pid>-<random><suffix>``. A process killed with
SIGKILL (or a machine that lost power) cannot delete what it left; the next
run that writes into the same folder removes every temporary of this host
whose process is gone. Temporaries of live processes, and of other hosts
sharing the folder over a network file system, are never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from pathlib import Path

from .errors import InputError

HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "host"
_NAME = re.compile(r"^\..*\.partial-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[0-9a-f]{8}(\..*)?$")


def partial_path(final: str | Path) -> Path:
    """A unique temporary name beside ``final`` that keeps its suffix (GDAL reads it)."""
    final = Path(final)
    return final.with_name(f".{final.stem}.partial-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}{final.suffix}")


def longest_temporary_name(final: str | Path, folder: bool = False) -> str:
    """The longest name a temporary of ``final`` can take (any process id up to Linux's
    largest, 4194304): :func:`partial_path`'s, or for a folder :func:`scratch_dir`'s and
    the name the replaced folder is moved aside to."""
    final, pid, tag = Path(final), "9" * 7, "0" * 8
    if folder:
        return f".{final.name}.partial-{HOST}-{pid}-{tag}.old"
    return f".{final.stem}.partial-{HOST}-{pid}-{tag}{final.suffix}"


def scratch_dir(parent: str | Path, name: str) -> Path:
    """Create and return a temporary folder in ``parent``, named after ``name``."""
    clean_stale(parent)
    path = Path(parent) / f".{name}.partial-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir()
    except OSError as err:
        raise InputError(f"cannot write in folder {str(parent)!r} ({err.strerror}); choose another folder") from err
    return path


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale(folder: str | Path) -> list[Path]:
    """Temporaries in ``folder`` left by dead processes of this host."""
    found: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return found
    for entry in entries:
        match = _NAME.match(entry.name)
        if match and match["host"] == HOST and not _process_alive(int(match["pid"])):
            found.append(entry)
    return found


def clean_stale(folder: str | Path) -> list[Path]:
    """Remove the temporaries that dead processes of this host left in ``folder``."""
    removed = []
    for entry in stale(folder):
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue  # not ours to remove after all (permissions): leave it
        removed.append(entry)
    return removed
