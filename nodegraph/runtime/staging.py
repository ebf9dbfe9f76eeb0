"""All-or-nothing outputs: files are written to a staging folder inside the output folder and moved to
their final places only when the whole run succeeded; on any failure (or Ctrl-C) the staging folder
is removed and the output folder is left as it was.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STAGING_PREFIX = ".nodegraph-staging-"


class Staging:
    """One run's staging folder. Created lazily by the first `ctx.output_path`, never before."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.dir = self.out_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        self._out_dir_existed = self.out_dir.exists()

    def commit(self) -> list[Path]:
        """Move every staged file to the same relative place in the output folder; return final paths."""
        written: list[Path] = []
        if not self.dir.exists():
            return written
        for staged in sorted(p for p in self.dir.rglob("*") if p.is_file()):
            final = self.out_dir / staged.relative_to(self.dir)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)
            written.append(final)
        shutil.rmtree(self.dir, ignore_errors=True)
        return written

    def discard(self) -> None:
        """Remove the staging folder, and the output folder too if this run created it and it is empty."""
        shutil.rmtree(self.dir, ignore_errors=True)
        if not self._out_dir_existed:
            try:
                self.out_dir.rmdir()  # only succeeds when empty
            except OSError:
                pass


@contextmanager
def staged_outputs(out_dir: Path) -> Iterator[Staging]:
    """Yield a `Staging`; discard it if the block raises anything (KeyboardInterrupt included)."""
    staging = Staging(out_dir)
    try:
        yield staging
    except BaseException:
        staging.discard()
        raise
