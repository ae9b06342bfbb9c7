"""``python -m fairhead``: the command line (what ``torchrun -m fairhead extract ...`` runs in each rank)."""

import sys

from fairhead.cli import main

if __name__ == "__main__":  # pragma: no cover - exercised through subprocesses
    sys.exit(main())
