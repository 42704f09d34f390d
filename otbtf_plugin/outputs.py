"""What a run may write, and how: the rules that keep the user's files safe.

1. No output may be the same file as an input, or as another output of the
   same run, or hold an input inside it (a folder output), or lie inside
   anything the run reads or owns: an input folder (a model), a folder output
   (replaced whole, or written into: checkpoints, TensorBoard logs), the files
   kept beside an input (its style, the labels' ``.origins.csv``). The files
   written beside an output (its ``.qml`` style, ``.aux.xml``, a report's
   ``.json``) count as that output.
2. Nothing the user did not name as an output is deleted: an existing folder is
   replaced only when it is one of ours (it holds ``marker``, the model
   metadata file) and holds nothing but what the run writes there (``owned``),
   or is empty.
3. An existing target whose write permission bits are all off is refused, even
   for root (for whom the rename over it would succeed).
4. Every name fits the file system with room for its temporary name
   (refused before any work, with the limit).
5. Outputs appear complete or not at all: every file of a run is written under
   a temporary name beside its target (see :mod:`scratch`) and renamed only once
   all of them are complete; a failure or a cancel removes the temporaries.

:func:`check_paths` applies rules 1-4 before any work; the Processing
provider calls it once for every algorithm, from the parameter definitions,
and the engine's entry points call it for scripts. :class:`StagedOutputs`
does rule 5.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, overload

from .errors import InputError
from .scratch import clean_stale, longest_temporary_name, partial_path, scratch_dir

GEOTIFF = (".tif", ".tiff")
RASTER_COMPANIONS = (".qml", ".aux.xml")  # a style and GDAL's statistics, written beside rasters

# Files that GIS software keeps beside a raster or vector and that belong to it, and the
# table that training reads beside a labels image (patches_image.ORIGINS_SUFFIX).
SIDECARS = (".qml", ".aux.xml", ".ovr", ".msk", ".prj", ".dbf", ".shx", ".cpg", ".qix", ".sbn", ".sbx", ".origins.csv")

PathLike = str | Path


@dataclass(frozen=True)
class Output:
    """An output path and what the run writes with it.

    ``kind`` is ``"file"``, ``"folder"`` (replaced whole) or ``"into"`` (a folder the run
    adds files to, such as TensorBoard logs: nothing in it is removed); ``companions`` are suffixes of
    files written beside a file output (``".qml"`` replaces the suffix,
    ``".aux.xml"`` is appended, as GDAL and QGIS do). A folder output with a ``marker``
    may already exist only when empty, or holding the marker and nothing but ``owned``:
    the rest is the user's.
    """

    path: PathLike
    kind: Literal["file", "folder", "into"] = "file"
    companions: tuple[str, ...] = ()
    marker: str | None = None  # folder outputs: the file that makes an existing folder ours
    owned: tuple[str, ...] = ()  # folder outputs: the names the run writes there; () any
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
    if output.kind in ("folder", "into"):
        if path.exists() and not path.is_dir():
            return f"{name} {str(path)!r} is a file, not a folder: choose a folder path"
        if output.kind == "folder" and path.is_dir() and read_only(path):
            return f"{name} {str(path)!r} is read-only: choose another folder, or make it writable"
        return _foreign_content(name, output) if path.is_dir() else None
    if output.suffixes and path.suffix.lower() not in output.suffixes:
        got = f"ends in {path.suffix!r}" if path.suffix else "has no extension"
        if output.suffixes != GEOTIFF:
            return f"{name} {str(path)!r} {got}: give a name ending in {' or '.join(output.suffixes)}"
        return (
            f"{name} {str(path)!r} {got}, but it is written as GeoTIFF: give a name ending in "
            f"{' or '.join(output.suffixes)} (convert it afterwards with gdal_translate if you need "
            "another format)"
        )
    for file in output.files():
        if file.is_dir():
            return f"{name} {str(file)!r} is a folder: give a file name"
        if read_only(file):
            return (
                f"{name} {str(file)!r} exists and is read-only: choose another name, "
                "or make the file writable to replace it"
            )
    return None


def _foreign_content(name: str, output: Output) -> str | None:
    """Why an existing folder output may not be replaced: it is not ours (no marker), or it
    also holds entries the run does not write (which replacing it would delete). None when it
    is empty or ours, and for folders written into (nothing in them is removed)."""
    path = Path(output.path)
    entries = sorted(entry.name for entry in path.iterdir()) if output.kind == "folder" else []
    if not entries:
        return None
    if not (output.marker and (path / output.marker).is_file()):
        why = f" (no {output.marker})" if output.marker else ""
        return (
            f"{name} {str(path)!r} is an existing folder that is not an otbtf model{why}; it would be "
            "replaced: choose a new or empty folder"
        )
    foreign = [entry for entry in entries if output.owned and entry not in output.owned]
    if foreign:
        listed = ", ".join(repr(entry) for entry in foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        return (
            f"{name} {str(path)!r} holds {listed}, which otbtf did not write there; it would be replaced: "
            "move them out, or choose a new or empty folder"
        )
    return None


def name_problem(name: str, output: Output) -> str | None:
    """Why a name of ``output`` (or the temporary name written beside it) is too long for its
    file system, or None. Checked before anything asks the file system about the path: a name
    over the limit makes every look-up fail."""
    for file in output.files():
        final = Path(file)
        folder = _existing_ancestor(final.absolute().parent)
        name_max, path_max = _limits(folder)
        if output.kind == "file":
            # GDAL's .aux.xml or SQLite's -journal (GeoPackage) beside the temporary: 8 more
            longest = longest_temporary_name(final) + "-journal"
        elif output.kind == "folder":
            longest = longest_temporary_name(final, folder=True)
        else:
            longest = final.name
        size, extra = len(os.fsencode(final.name)), len(os.fsencode(longest)) - len(os.fsencode(final.name))
        if size + extra > name_max:
            unit = "characters" if size == len(final.name) else "bytes"
            return (
                f"{name}: the name {_shortened(final.name)!r} is {size} {unit} long; the file system of "
                f"{str(folder)!r} allows {name_max} per name, and the run needs {extra} more for its "
                f"temporary files: give a name of at most {name_max - extra} {unit}"
            )
        if len(os.fsencode(str(final.absolute()))) + extra >= path_max:
            return (
                f"{name}: the path {_shortened(str(final))!r} is too long for the file system "
                f"({path_max} bytes at most, with {extra} more for temporary files): choose a shorter path"
            )
    return None


def _existing_ancestor(folder: Path) -> Path:
    while True:
        try:
            if folder.is_dir() or folder.parent == folder:
                return folder
        except OSError:
            pass
        folder = folder.parent


def _limits(folder: Path) -> tuple[int, int]:
    try:
        return os.pathconf(folder, "PC_NAME_MAX"), os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 255, 4096


def _shortened(text: str) -> str:
    return text if len(text) <= 60 else f"{text[:28]}...{text[-28:]}"


@overload
def geotiff(path: PathLike) -> Output: ...
@overload
def geotiff(path: None) -> None: ...
def geotiff(path: PathLike | None) -> Output | None:
    """A GeoTIFF output written with its style and statistics beside it."""
    return Output(path, companions=RASTER_COMPANIONS, suffixes=GEOTIFF) if path else None


def check_paths(
    inputs: Mapping[str, PathLike | Iterable[PathLike] | None], outputs: Mapping[str, Output | PathLike | None]
) -> None:
    """Raise :class:`InputError` naming the first output that would lose the user's data.

    ``inputs`` maps a parameter name to a path (or paths); ``outputs`` maps a
    parameter name to an :class:`Output` (a bare path is a file). None and
    empty values are skipped.
    """
    named_outputs = {
        name: value if isinstance(value, Output) else Output(value)
        for name, value in outputs.items()
        if value not in (None, "")
    }
    for name, output in named_outputs.items():
        problem = name_problem(name, output)
        if problem:
            raise InputError(problem)
    named_inputs: list[_Named] = []
    for name, value in inputs.items():
        paths = [value] if isinstance(value, str | Path) else list(value or [])
        named_inputs += [_Named(name, Path(p)) for p in paths if p not in (None, "")]
    try:
        _check_against(named_inputs, named_outputs)
    except OSError as err:  # a path the file system refuses to look at (permissions, a loop of links)
        raise InputError(f"cannot check {err.filename or 'a path'}: {err.strerror}; choose another path") from err


def _check_against(named_inputs: list[_Named], named_outputs: dict[str, Output]) -> None:
    seen: list[tuple[str, Path, str]] = []  # (name, path, kind) of the outputs checked so far
    for name, output in named_outputs.items():
        for file in output.files():
            why = _input_conflict(output, file, named_inputs) or _output_conflict(output, file, seen)
            if why:
                raise _refusal(name, output, why)
            seen.append((name, file, output.kind))
        problem = target_problem(name, output)
        if problem:
            raise InputError(problem)


def _input_conflict(output: Output, file: Path, named_inputs: list[_Named]) -> str | None:
    """Why ``file`` (an output or one of its companions) would touch what the run reads."""
    for source in named_inputs:
        if _same(file, source.path):
            return f"is the same file as the input {source.name}"
        if _inside(file, source.path) and source.path.is_dir():
            return f"lies inside the input folder {source.name} ({str(source.path)!r}), which the run reads"
        if any(sidecar.exists() and _same(file, sidecar) for sidecar in input_files(source.path)[1:]):
            return f"would replace {Path(file).name!r}, which belongs to the input {source.name} ({str(source.path)!r})"
        if output.kind == "folder" and _inside(source.path, file):
            return f"holds the input {source.name} ({str(source.path)!r}), which replacing it would delete"
    return None


def _output_conflict(output: Output, file: Path, seen: list[tuple[str, Path, str]]) -> str | None:
    """Why ``file`` would clash with the outputs checked before it."""
    for other_name, other, other_kind in seen:
        if _same(file, other):
            return f"is the same path as the output {other_name}"
        for kind, why in (
            ("folder", "the folder is replaced at the end of the run"),
            ("into", "the run writes files into that folder"),
        ):
            if (output.kind == kind and _inside(other, file)) or (other_kind == kind and _inside(file, other)):
                return f"and the output {other_name} lie one inside the other, and {why}"
    return None


def _refusal(name: str, output: Output, why: str) -> InputError:
    return InputError(f"{name} {str(output.path)!r} {why}: choose another output path")


class StagedOutputs:
    """Files written under temporary names, renamed to their targets together by :meth:`commit`.

    Use as a context manager: leaving it without :meth:`commit` (an error, a
    cancel) removes every temporary; the targets are untouched.
    """

    def __init__(self) -> None:
        self._files: list[tuple[Path, Path]] = []  # (temporary, final)
        self._folders: list[tuple[Path, Output]] = []  # (temporary, final)

    def file(self, final: PathLike) -> Path:
        """A temporary path beside ``final`` (same suffix), renamed to it on commit."""
        final = Path(final)
        _check_folder(final.parent)
        output = Output(final)
        problem = name_problem(final.name, output) or target_problem(final.name, output)
        if problem:
            raise InputError(problem)
        clean_stale(final.parent)
        tmp = partial_path(final)
        self._files.append((tmp, final))
        return tmp

    def folder(self, target: Output) -> Path:
        """A temporary folder beside ``target.path``; on commit it replaces it (which must be
        absent, empty, or ours: see :class:`Output`)."""
        final = Path(target.path)
        _check_folder(final.parent)
        problem = name_problem(final.name, target) or target_problem(final.name, target)
        if problem:
            raise InputError(problem)
        tmp = scratch_dir(final.parent, final.name)
        self._folders.append((tmp, replace(target, path=final)))
        return tmp

    def commit(self) -> None:
        """Rename every temporary over its target (folders last checked again)."""
        try:
            for tmp, target in self._folders:
                problem = target_problem(Path(target.path).name, target)
                if problem:  # the folder changed while the run worked
                    raise InputError(problem)
                _replace_folder(tmp, Path(target.path))
            for tmp, final in self._files:
                os.replace(tmp, final)
        except OSError as err:
            raise InputError(
                f"could not write {err.filename or 'an output'}: {err.strerror}. Is the disk full "
                "or the folder read-only?"
            ) from err
        self._files, self._folders = [], []

    def discard(self) -> None:
        for tmp, _ in self._files:
            # GDAL's statistics, SQLite's journals (GeoPackage) beside the temporary
            for leftover in (tmp, *(tmp.with_name(tmp.name + s) for s in (".aux.xml", "-journal", "-wal", "-shm"))):
                leftover.unlink(missing_ok=True)
        for tmp, _ in self._folders:
            shutil.rmtree(tmp, ignore_errors=True)
        self._files, self._folders = [], []

    def __enter__(self) -> StagedOutputs:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        finals = [final for _, final in self._files] + [Path(target.path) for _, target in self._folders]
        targets = ", ".join(str(final) for final in finals) or "the outputs"
        self.discard()
        if isinstance(error, OSError):  # rasterio's I/O errors are OSErrors; reads raise InputError
            raise InputError(
                f"could not write {targets}: {error}. Is the disk full or the folder read-only? "
                + " ".join(unchanged(final) for final in finals[:3])
            ) from error


def unchanged(final: PathLike) -> str:
    """What a failed write left at ``final``: the previous output, or nothing (for messages)."""
    final = Path(final)
    return f"The previous {final.name} is as it was." if final.exists() else f"Nothing was written at {final}."


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
