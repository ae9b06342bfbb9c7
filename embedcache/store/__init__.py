"""The on-disk cache: key names and checks (``schema``), writing, reading and the extraction journal."""
