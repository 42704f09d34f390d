"""What a run may write, and how: the rules that keep the user's files safe.

1. No output may be the same file as an input, or as another output of the
   same run, or hold an input inside it (a folder output). The files written
   beside an output (its ``.qml`` style, ``.aux.xml``, a report's ``.json``)
   count as that output.
2. Nothing the user did not name as an output is deleted: an existing folder is
   replaced only when it is one of ours (it holds ``marker``, the model
   metadata file) or is empty.
3. An existing target whose write permission bits are all off is refused, even
   for root (for whom the rename over it would succeed).
4. Outputs appear complete or not at all: every file of a run is written under
   a temporary name beside its target (see :mod:`scratch`) and renamed only once
   all of them are complete; a failure or a cancel removes the temporaries.

:func:`check_paths` applies rules 1-3 before any work; the Processing
provider calls it once for every algorithm, from the parameter definitions,
and the engine's entry points call it for scripts. :class:`StagedOutputs`
does rule 4.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .scratch import clean_stale, partial_path, scratch_dir

GEOTIFF = (".tif", ".tiff")
RASTER_COMPANIONS = (".qml", ".aux.xml")  # a style and GDAL's statistics, written beside rasters

# Files that GIS software keeps beside a raster or vector and that belong to it.
SIDECARS = (".qml", ".aux.xml", ".ovr", ".msk", ".prj", ".dbf", ".shx", ".cpg", ".qix", ".sbn", ".sbx")

PathLike = str | Path


@dataclass(frozen=True)
class Output:
    """An output path and what the run writes with it.

    ``kind`` is ``"file"``, ``"folder"`` (replaced whole) or ``"into"`` (a folder the run
    adds files to, such as TensorBoard logs: nothing in it is removed); ``companions`` are suffixes of
    files written beside a file output (``".qml"`` replaces the suffix,
    ``".aux.xml"`` is appended, as GDAL and QGIS do).
    """

    path: PathLike
    kind: str = "file"
    companions: tuple[str, ...] = ()
    marker: str | None = None  # folder outputs: the file that makes an existing folder ours
    suffixes: tuple[str, ...] = ()  # file outputs: the name must end in one of these (any case); () any

    def files(self) -> list[Path]:
        path = Path(self.path)
        return [path, *(_companion(path, suffix) for suffix in self.companions)]


@dataclass(frozen=True)
class _Named:
    name: str
    path: Path


def _companion(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix) if suffix == ".aux.xml" else path.with_suffix(suffix)


def _key(path: Path) -> str:
    """A name that is equal for two spellings of one file (relative, symlinked, ``..``)."""
    return os.path.normcase(os.path.realpath(path))


def _same(a: Path, b: Path) -> bool:
    if _key(a) == _key(b):
        return True
    try:  # hard links, bind mounts
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    inner, outer = _key(path), _key(folder)
    return inner != outer and inner.startswith(outer.rstrip(os.sep) + os.sep)


def input_files(path: PathLike) -> list[Path]:
    """An input and the sidecar files that belong to it."""
    path = Path(path)
    return [path, *(_companion(path, suffix) for suffix in SIDECARS)]


def read_only(path: Path) -> bool:
    """True for an existing file whose write bits are all off (or that this user cannot write)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(path, os.W_OK)


def target_problem(name: str, output: Output) -> str | None:
    """Why ``output`` cannot be written at its path (rules 2 and 3), or None."""
    path = Path(output.path)
    parent = path.absolute().parent
    if output.kind != "into" and not parent.is_dir():  # TensorBoard makes its folders
        return f"{name} {str(path)!r}: the folder {str(parent)!r} does not exist; create it or choose another"
    if output.kind == "into":
        return f"{name} {str(path)!r} is a file, not a folder: choose a folder path" \
            if path.exists() and not path.is_dir() else None
    if output.kind == "folder":
        if path.exists() and not path.is_dir():
            return f"{name} {str(path)!r} is a file, not a folder: choose a folder path"
        if path.is_dir() and read_only(path):
            return f"{name} {str(path)!r} is read-only: choose another folder, or make it writable"
        if path.is_dir() and any(path.iterdir()) and not (output.marker and (path / output.marker).is_file()):
            return (f"{name} {str(path)!r} is an existing folder that is not an otbtf model "
                    f"(no {output.marker}); it would be replaced: choose a new or empty folder")
        return None
    if output.suffixes and path.suffix.lower() not in output.suffixes:
        got = f"ends in {path.suffix!r}" if path.suffix else "has no extension"
        if output.suffixes != GEOTIFF:
            return f"{name} {str(path)!r} {got}: give a name ending in {' or '.join(output.suffixes)}"
        return (f"{name} {str(path)!r} {got}, but it is written as GeoTIFF: give a name ending in "
                f"{' or '.join(output.suffixes)} (convert it afterwards with gdal_translate if you need "
                "another format)")
    for file in output.files():
        if file.is_dir():
            return f"{name} {str(file)!r} is a folder: give a file name"
        if read_only(file):
            return (f"{name} {str(file)!r} exists and is read-only: choose another name, "
                    "or make the file writable to replace it")
    return None


def geotiff(path: PathLike | None) -> Output | None:
    """A GeoTIFF output written with its style and statistics beside it."""
    return Output(path, companions=RASTER_COMPANIONS, suffixes=GEOTIFF) if path else None


def check_paths(inputs: Mapping[str, PathLike | Iterable[PathLike] | None],
                outputs: Mapping[str, Output | PathLike | None]) -> None:
    """Raise :class:`InputError` naming the first output that would lose the user's data.

    ``inputs`` maps a parameter name to a path (or paths); ``outputs`` maps a
    parameter name to an :class:`Output` (a bare path is a file). None and
    empty values are skipped.
    """
    named_outputs = {name: value if isinstance(value, Output) else Output(value)
                     for name, value in outputs.items() if value not in (None, "")}
    named_inputs: list[_Named] = []
    for name, value in inputs.items():
        paths = [value] if isinstance(value, str | Path) else list(value or [])
        named_inputs += [_Named(name, Path(p)) for p in paths if p not in (None, "")]
    seen: list[tuple[str, Path, str]] = []  # (name, path, kind) of the outputs checked so far
    for name, output in named_outputs.items():
        for file in output.files():
            for source in named_inputs:
                if _same(file, source.path):
                    raise _refusal(name, output, f"is the same file as the input {source.name}")
                if any(sidecar.exists() and _same(file, sidecar) for sidecar in input_files(source.path)[1:]):
                    raise _refusal(name, output, f"would replace {Path(file).name!r}, which belongs to the "
                                                 f"input {source.name} ({str(source.path)!r})")
                if output.kind == "folder" and _inside(source.path, file):
                    raise _refusal(name, output, f"holds the input {source.name} ({str(source.path)!r}), "
                                                 "which replacing it would delete")
            for other_name, other, other_kind in seen:
                if _same(file, other):
                    raise _refusal(name, output, f"is the same path as the output {other_name}")
                nested = (output.kind == "folder" and _inside(other, file)) \
                    or (other_kind == "folder" and _inside(file, other))
                if nested:
                    raise _refusal(name, output, f"and the output {other_name} lie one inside the other, and the "
                                                 "folder is replaced at the end of the run")
            seen.append((name, file, output.kind))
        problem = target_problem(name, output)
        if problem:
            raise InputError(problem)


def _refusal(name: str, output: Output, why: str) -> InputError:
    return InputError(f"{name} {str(output.path)!r} {why}: choose another output path")


class StagedOutputs:
    """Files written under temporary names, renamed to their targets together by :meth:`commit`.

    Use as a context manager: leaving it without :meth:`commit` (an error, a
    cancel) removes every temporary; the targets are untouched.
    """

    def __init__(self) -> None:
        self._files: list[tuple[Path, Path]] = []  # (temporary, final)
        self._folders: list[tuple[Path, Path, str | None]] = []

    def file(self, final: PathLike) -> Path:
        """A temporary path beside ``final`` (same suffix), renamed to it on commit."""
        final = Path(final)
        _check_folder(final.parent)
        problem = target_problem(str(final.name), Output(final))
        if problem:
            raise InputError(problem)
        clean_stale(final.parent)
        tmp = partial_path(final)
        self._files.append((tmp, final))
        return tmp

    def folder(self, final: PathLike, marker: str) -> Path:
        """A temporary folder beside ``final``; on commit it replaces ``final``
        (which must be absent, empty, or hold ``marker``)."""
        final = Path(final)
        _check_folder(final.parent)
        problem = target_problem(str(final.name), Output(final, "folder", marker=marker))
        if problem:
            raise InputError(problem)
        tmp = scratch_dir(final.parent, final.name)
        self._folders.append((tmp, final, marker))
        return tmp

    def commit(self) -> None:
        """Rename every temporary over its target (folders last checked again)."""
        try:
            for tmp, final, marker in self._folders:
                problem = target_problem(final.name, Output(final, "folder", marker=marker))
                if problem:  # the folder changed while the run worked
                    raise InputError(problem)
                _replace_folder(tmp, final)
            for tmp, final in self._files:
                os.replace(tmp, final)
        except OSError as err:
            raise InputError(f"could not write {err.filename or 'an output'}: {err.strerror}. Is the disk full "
                             "or the folder read-only?") from err
        self._files, self._folders = [], []

    def discard(self) -> None:
        for tmp, _ in self._files:
            for leftover in (tmp, tmp.with_name(tmp.name + ".aux.xml")):
                leftover.unlink(missing_ok=True)
        for tmp, _, _ in self._folders:
            shutil.rmtree(tmp, ignore_errors=True)
        self._files, self._folders = [], []

    def __enter__(self) -> StagedOutputs:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        targets = ", ".join(str(final) for _, final in self._files) or "the outputs"
        self.discard()
        if isinstance(error, OSError):  # rasterio's I/O errors are OSErrors; reads raise InputError
            raise InputError(f"could not write {targets}: {error}. Is the disk full or the folder read-only? "
                             "Nothing was left at that path") from error


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise InputError(f"output folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"output folder {str(folder)!r} is not writable; choose another folder")


def _replace_folder(new: Path, final: Path) -> None:
    """Put ``new`` at ``final``; an existing ``final`` (ours, checked) is moved aside first
    and deleted only after the rename, so one of the two is always complete."""
    if not final.exists():
        new.rename(final)
        return
    aside = partial_path(final.with_name(final.name + ".old"))
    final.rename(aside)
    try:
        new.rename(final)
    except OSError:
        aside.rename(final)
        raise
    shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def atomic_output(final: PathLike) -> Iterator[Path]:
    """One file: yield a temporary path beside ``final``, renamed to it when the block
    ends without error, deleted otherwise. The caller closes its file inside the block."""
    with staged_or_now(None) as staged:
        yield staged.file(final)


@contextmanager
def staged_or_now(staged: StagedOutputs | None) -> Iterator[StagedOutputs]:
    """``staged`` itself (its caller commits), or a group of its own committed when the block ends."""
    if staged is not None:
        yield staged
        return
    with StagedOutputs() as own:
        yield own
        own.commit()
