"""Named dataset presets: the JSON files in ``fairhead/presets_data/`` (installed with the package).

A preset fixes a source kind and its columns (e.g. the seed paper's CelebA task:
target ``Blond_Hair``, sensitive ``Male``); the user only supplies ``--root``.
"""

from __future__ import annotations

import json
from pathlib import Path

from fairhead_errors import DataError

# Imported inside the functions that use them: embedcache (it imports torch: 1-2 s); a command that does not need
# them does not pay for them.

#: shipped as package data, so a wheel install (not only a source checkout) has them
PRESET_DIR = Path(__file__).resolve().parent / "presets_data"
MSG_UNKNOWN_PRESET = "unknown preset {name!r} (known: {known}); run `fairhead presets` to list them"
MSG_NEEDS_ROOT = "preset {name!r} needs --root: {what}"
MSG_NO_PRESETS = "no preset folder at '{path}'; this install is incomplete, reinstall fairhead (pip install .)"


def list_presets() -> dict[str, dict]:
    if not PRESET_DIR.is_dir():
        raise DataError(MSG_NO_PRESETS.format(path=PRESET_DIR))
    return {p.stem: json.loads(p.read_text()) for p in sorted(PRESET_DIR.glob("*.json"))}


def source_from_preset(name: str, *, root: Path | None, target: str | None = None, sensitive=None):
    """The :mod:`embedcache` source a preset describes; ``target``/``sensitive`` override its columns."""
    from embedcache import sources

    presets = list_presets()
    if name not in presets:
        raise DataError(MSG_UNKNOWN_PRESET.format(name=name, known=", ".join(presets)))
    preset = presets[name]
    if root is None:
        raise DataError(MSG_NEEDS_ROOT.format(name=name, what=preset.get("needs_root", "the dataset folder")))
    if preset["source"] == "celeba":
        return sources.CelebASource(root, target=target or preset["target"],
                                    sensitive=tuple(sensitive or preset["sensitive"]))
    raise DataError(f"preset {name!r} has an unknown source kind {preset['source']!r}; fix fairhead/presets_data/{name}.json")
