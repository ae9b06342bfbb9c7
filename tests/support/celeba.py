"""A miniature CelebA in the official layout and formats (JPEG files, list_attr_celeba.txt, list_eval_partition.txt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: the 40 attribute names of CelebA's list_attr_celeba.txt, in file order
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
CELEBA_ROWS = 30
#: small images keep the suite fast; the real files are 178 x 218
CELEBA_IMAGE_SIZE = (36, 44)


def write_celeba_tree(root: Path, n: int = CELEBA_ROWS, seed: int = 0) -> Path:
    """Write a miniature CelebA in the official layout and formats."""
    rng = np.random.default_rng(seed)
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    values = np.where(rng.random((n, len(CELEBA_ATTRIBUTES))) < 0.4, 1, -1)
    # make sure the target and the sensitive attribute have both values
    blond, male = CELEBA_ATTRIBUTES.index("Blond_Hair"), CELEBA_ATTRIBUTES.index("Male")
    values[:4, blond] = (1, 1, -1, -1)
    values[:4, male] = (1, -1, 1, -1)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    for name in names:
        pixels = rng.integers(0, 256, (CELEBA_IMAGE_SIZE[1], CELEBA_IMAGE_SIZE[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / name, format="JPEG", quality=90)
    lines = [str(n), " ".join(CELEBA_ATTRIBUTES)]
    for name, row in zip(names, values):
        # the real file pads values to width 2 and separates with spaces
        lines.append(name + " " + " ".join(f"{v:2d}" for v in row))
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    splits = [0] * (n - 10) + [1] * 5 + [2] * 5
    (root / "list_eval_partition.txt").write_text("".join(f"{nm} {s}\n" for nm, s in zip(names, splits)))
    return root
