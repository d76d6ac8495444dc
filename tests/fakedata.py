"""Tiny dataset folders in the real on-disk formats, for tests.

Every fake image is one solid colour whose red channel encodes its label (red = 80 * label) and whose
green channel its number, so batches can be checked against the files they came from.
"""

from PIL import Image

WNIDS = ["n01443537", "n01629819", "n01641577"]


def write_jpeg(path, size, colour, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, "JPEG", quality=95)


def write_tiny_imagenet(parent):
    """parent/tiny-imagenet-200: 3 wnids x 4 train images (one grayscale), one corrupt file, 3 val images."""
    root = parent / "tiny-imagenet-200"
    root.mkdir()
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for label, wnid in enumerate(WNIDS):
        for k in range(4):
            colour = (80 * label, 20 * (3 * label + k), 100)
            write_jpeg(root / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", (64, 64), colour)
    write_jpeg(root / "train" / WNIDS[2] / "images" / f"{WNIDS[2]}_3.JPEG", (64, 64), 160, mode="L")
    (root / "train" / WNIDS[1] / "images" / "corrupt.JPEG").write_bytes(b"not a jpeg at all" * 10)
    lines = []
    for i, label in enumerate([2, 0, 1]):
        write_jpeg(root / "val" / "images" / f"val_{i}.JPEG", (64, 64), (80 * label, 0, 0))
        lines.append(f"val_{i}.JPEG\t{WNIDS[label]}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return parent
