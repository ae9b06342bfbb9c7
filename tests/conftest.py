"""Suite-wide settings: keep torch to the machine's cores so parallel BLAS does not oversubscribe."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
