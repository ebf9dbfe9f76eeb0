"""All-or-nothing outputs: files are written to a staging folder inside the output folder and moved to
their final places only when the whole run succeeded; on any failure (or Ctrl-C) the staging folder
is removed and the output folder is left as it was.

Writes never leave the output folder. A relative path cannot climb out (`OutputFile` refuses `..`),
but a symbolic link inside the folder could: `out/x -> /elsewhere` makes `x/a.png` land in
`/elsewhere`. So every target is resolved (links followed, as the OS would) and refused when it ends
up outside — when a node asks for the path, and again at the moment staged files are moved, since a
link may be planted while the graph runs. The output folder itself may be a link: that is the user's
choice of where outputs go.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from nodegraph.errors import InputError, NodeFailed, NodegraphError, Problem

STAGING_PREFIX = ".nodegraph-staging-"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def leaves_folder(root: Path, rel: PurePosixPath) -> str | None:
    """Why `root/rel` resolves outside `root` (a link on the way, or the name itself), or None."""
    real_root = os.path.realpath(root)
    if _inside(os.path.realpath(root / rel), real_root):
        return None
    here = Path(root)
    for part in rel.parts:
        here = here / part
        if os.path.islink(here) and not _inside(os.path.realpath(here), real_root):
            try:
                target = os.readlink(here)
            except OSError:
                target = os.path.realpath(here)
            return f"'{here}' is a symbolic link to '{target}'"
    return f"it resolves to '{os.path.realpath(root / rel)}'"


def _blocked(root: Path, rel: PurePosixPath) -> str | None:
    """Why no file can be put at `root/rel` (a file where a folder must be, a folder at the name)."""
    here = Path(root)
    for part in rel.parts[:-1]:
        here = here / part
        if os.path.lexists(here) and not here.is_dir():
            return f"'{here}' is a file, not a folder"
    final = Path(root) / rel
    if final.is_dir():
        return f"'{final}' is a folder"
    return None


def check_target(out_dir: Path, rel: PurePosixPath) -> None:
    """Refuse an output path that would be written outside `out_dir` or cannot be written at all."""
    why = leaves_folder(out_dir, rel)
    if why is not None:
        raise InputError(f"output path '{rel}' would be written outside the output folder '{out_dir}': "
                         f"{why}; refusing to write there", field="path")
    why = _blocked(out_dir, rel)
    if why is not None:
        raise InputError(f"output path '{rel}' cannot be written: {why}", field="path")


def check_output_folder(out_dir: Path) -> None:
    """Refuse an output folder that cannot hold files, before any node runs.

    Why up front: otherwise the problem shows only when the first file is staged, after the whole
    graph has computed.
    """
    folder = Path(out_dir)
    if os.path.islink(folder) and not folder.exists():
        raise NodegraphError(f"output folder '{folder}' (--out) is a symbolic link to "
                             f"'{os.readlink(folder)}', which does not exist")
    if folder.exists():
        if not folder.is_dir():
            raise NodegraphError(f"output folder '{folder}' (--out) is a file, not a folder; "
                                 "pick another --out")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise NodegraphError(f"output folder '{folder}' (--out) is not writable")
        return
    ancestor = folder.absolute().parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NodegraphError(f"output folder '{folder}' (--out) cannot be created: '{ancestor}' is a file, "
                             "not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise NodegraphError(f"output folder '{folder}' (--out) cannot be created: '{ancestor}' is not "
                             "writable")


def staged_target(staging_dir: Path, out_dir: Path, rel: PurePosixPath) -> Path:
    """Check where `rel` goes (final and staged), create the staged file's folder; the staged path.

    The staging folder is private (mode 0700) and fresh, so nothing may exist at a staged path yet:
    anything there (a link, say) was planted, and is refused rather than written through.
    """
    check_target(out_dir, rel)
    staged = staging_dir / rel
    try:
        if not staging_dir.is_dir():
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            staging_dir.mkdir(mode=0o700, exist_ok=True)
        if os.path.islink(staging_dir):
            raise InputError(f"the staging folder '{staging_dir}' is a symbolic link; refusing to write "
                             "through it", field="path")
        staged.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create a folder for output '{rel}' in '{out_dir}': "
                         f"{exc.strerror or exc}", field="path") from exc
    why = leaves_folder(staging_dir, rel)
    if why is None and os.path.lexists(staged):
        why = f"'{staged}' already exists"
    if why is not None:
        raise InputError(f"output path '{rel}' would be written outside the staging folder: {why}; "
                         "refusing to write there", field="path")
    return staged


class Staging:
    """One run's staging folder. Created lazily by the first `ctx.output_path`, never before."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        name = f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        self.dir = self.out_dir / name
        self._replaced = self.out_dir / f"{name}.old"  # files this run overwrites, until it is committed
        self._out_dir_existed = self.out_dir.exists()

    def commit(self, owners: Mapping[Path, str] | None = None) -> list[Path]:
        """Move every staged file to the same relative place in the output folder; return final paths.

        All or nothing: every target is checked before the first move, and a move that fails puts
        back what was moved (and what it replaced). `owners` (staged path -> node id) names the node
        in errors.
        """
        if not self.dir.exists():
            return []
        moves = [(staged, self.out_dir / staged.relative_to(self.dir)) for staged in self._staged_files()]
        for staged, _ in moves:
            self._check(staged, owners)
        done: list[tuple[Path, Path, Path | None]] = []
        try:
            for staged, final in moves:
                final.parent.mkdir(parents=True, exist_ok=True)
                self._check(staged, owners)  # again: a link may appear while folders are made
                backup = None
                if os.path.lexists(final):
                    backup = self._replaced / staged.relative_to(self.dir)
                    backup.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(final, backup)
                try:
                    os.replace(staged, final)
                except OSError:
                    if backup is not None:
                        os.replace(backup, final)
                    raise
                done.append((staged, final, backup))
        except OSError as exc:
            self._roll_back(done)
            where = f" ('{exc.filename}')" if exc.filename else ""
            raise NodegraphError(f"cannot move outputs into '{self.out_dir}': {exc.strerror or exc}{where}; "
                                 "the output folder was left as it was") from exc
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self._replaced, ignore_errors=True)
        return [final for _, final, _ in done]

    def _staged_files(self) -> list[Path]:
        """Regular files in the staging folder; a link or anything else there is refused, not moved."""
        files: list[Path] = []
        for folder, dirs, names in os.walk(self.dir, followlinks=False):
            for name in [*dirs, *names]:
                path = Path(folder) / name
                mode = os.lstat(path).st_mode
                if stat.S_ISREG(mode):
                    files.append(path)
                elif not stat.S_ISDIR(mode):
                    raise NodegraphError(f"'{path}' in the staging folder is not a plain file (a symbolic "
                                         "link?); refusing to move it into the output folder")
        return sorted(files)

    def _check(self, staged: Path, owners: Mapping[Path, str] | None) -> None:
        rel = PurePosixPath(staged.relative_to(self.dir).as_posix())
        try:
            check_target(self.out_dir, rel)
        except InputError as exc:
            owner = (owners or {}).get(staged)
            raise NodeFailed(Problem(f"{exc.message} (found when moving the run's outputs into place)",
                                     node=owner, field=exc.field)) from exc

    def _roll_back(self, done: list[tuple[Path, Path, Path | None]]) -> None:
        for staged, final, backup in reversed(done):
            try:
                os.replace(final, staged)
                if backup is not None:
                    os.replace(backup, final)
            except OSError:
                continue  # best effort: the error that stopped the commit is what the user sees

    def discard(self) -> None:
        """Remove the staging folder, and the output folder too if this run created it and it is empty."""
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self._replaced, ignore_errors=True)
        if not self._out_dir_existed:
            try:
                self.out_dir.rmdir()  # only succeeds when empty
            except OSError:
                pass


@contextmanager
def staged_outputs(out_dir: Path) -> Iterator[Staging]:
    """Yield a `Staging`; discard it if the block raises anything (KeyboardInterrupt included).

    The output folder is checked first, so a folder that cannot hold files fails before any node runs.
    """
    check_output_folder(out_dir)
    staging = Staging(out_dir)
    try:
        yield staging
    except BaseException:
        staging.discard()
        raise
