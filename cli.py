"""Run the command line from a checkout: `python cli.py run graphs/core_text.yaml`."""

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent
for _path in (_ROOT, _ROOT / "plugins"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from nodegraph.cli.app import main  # noqa: E402

if __name__ == "__main__":
    main()
