"""Digit-recognition data for the MNIST study: the MNIST IDX files, or scikit-learn's digits.

* :func:`load_mnist` reads the four standard IDX files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
  optionally ``.gz``) from ``DIR``, ``DIR/raw`` or ``DIR/MNIST/raw`` (torchvision's layout). Nothing
  is ever downloaded.
* :func:`load_digits` is the embedded default: scikit-learn's handwritten digits (1797 images of
  8x8 pixels, 16 grey levels), shipped inside the scikit-learn package. Its images are 8x8, so a
  model on it has a 64-wide input layer instead of MNIST's 784.

The IDX format (LeCun et al.): a big-endian header — two zero bytes, a type code (``0x08`` =
unsigned byte), the number of dimensions — followed by one big-endian int32 per dimension and the
row-major payload. Images are magic ``0x00000803`` (n × rows × cols), labels ``0x00000801`` (n).

Both loaders return a :class:`Dataset` of float32 features scaled to [0, 1], flattened to
(n, rows·cols), and int64 labels.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: magic number of an IDX file of unsigned bytes with 3 dims (images) / 1 dim (labels).
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
#: (split, images file, labels file), without the optional ``.gz``.
MNIST_FILES: tuple[tuple[str, str, str], ...] = (
    ("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)
#: Where inside ``--data DIR`` the files may be (torchvision keeps them in ``MNIST/raw``).
SEARCH_SUBDIRS: tuple[str, ...] = (".", "raw", "MNIST/raw")
N_CLASSES = 10
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Dataset:
    """A train/test split of flattened images.

    Attributes:
        name: ``"mnist"`` or ``"digits"``.
        x_train, x_test: float32 (n, rows·cols), pixel intensities scaled to [0, 1].
        y_train, y_test: int64 (n,), class labels 0..9.
        image_shape: (rows, cols) of one image.
        description: one line for reports (source and sizes).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple[int, int]
    description: str

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]


# ---------------------------------------------------------------------------------------------
# IDX files.


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic (whatever its name)."""
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes (``.gz`` or not) and check it against ``magic``.

    Args:
        path: the file.
        magic: the expected magic number, :data:`IMAGES_MAGIC` or :data:`LABELS_MAGIC`; its low
            byte is the number of dimensions.

    Returns:
        uint8 array of the shape the header declares (n, rows, cols) or (n,).

    Raises:
        ValueError naming the file when the magic number differs, the header is short, or the
        payload is shorter (truncated) or longer than the dimensions declare.
    """
    path = Path(path)
    content = _read_bytes(path)
    if len(content) < 4:
        raise ValueError(f"{path}: {len(content)} bytes is too short for an IDX header")
    found = int.from_bytes(content[:4], "big")
    if found != magic:
        raise ValueError(
            f"{path}: magic number 0x{found:08x}, expected 0x{magic:08x} "
            f"({'images' if magic == IMAGES_MAGIC else 'labels'}: unsigned bytes, {magic & 0xFF} dims)"
        )
    ndim = magic & 0xFF
    header_bytes = 4 + 4 * ndim
    if len(content) < header_bytes:
        raise ValueError(f"{path}: truncated header ({len(content)} bytes, need {header_bytes})")
    dims = tuple(int(d) for d in np.frombuffer(content, dtype=">i4", count=ndim, offset=4))
    if min(dims) < 0:
        raise ValueError(f"{path}: negative dimension in header {dims}")
    expected = int(np.prod(dims, dtype=np.int64))
    payload = len(content) - header_bytes
    if payload != expected:
        kind = "truncated" if payload < expected else "has trailing data"
        raise ValueError(
            f"{path}: {kind}: header declares {'x'.join(map(str, dims))} = {expected} bytes of data, "
            f"found {payload}"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header_bytes).reshape(dims)


def find_mnist_files(root: str | Path) -> dict[str, Path]:
    """Locate the four MNIST files under ``root`` (itself, ``raw/`` or ``MNIST/raw/``).

    Returns:
        ``{"train-images-idx3-ubyte": path, ...}`` (keys without ``.gz``); all four come from the
        first directory that holds any of them, preferring the uncompressed file.

    Raises:
        FileNotFoundError listing every directory and name looked for.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"MNIST data directory {root} does not exist")
    names = [name for _, images, labels in MNIST_FILES for name in (images, labels)]
    for sub in SEARCH_SUBDIRS:
        folder = (root / sub).resolve()
        found = {name: _existing(folder, name) for name in names}
        if any(found.values()):
            missing = [name for name, path in found.items() if path is None]
            if missing:
                raise FileNotFoundError(
                    f"MNIST files incomplete in {folder}: missing {', '.join(f'{m}[.gz]' for m in missing)}"
                )
            return {name: path for name, path in found.items() if path is not None}
    looked = ", ".join(str((root / sub).resolve()) for sub in SEARCH_SUBDIRS)
    raise FileNotFoundError(
        f"no MNIST IDX files found; looked for {', '.join(f'{n}[.gz]' for n in names)} in {looked}"
    )


def _existing(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels"
        )
    if labels.size and labels.max() >= N_CLASSES:
        raise ValueError(f"{labels_path}: label {int(labels.max())} out of range 0..{N_CLASSES - 1}")
    return images, labels


def load_mnist(root: str | Path) -> Dataset:
    """MNIST from its IDX files under ``root`` (see :func:`find_mnist_files`), scaled to [0, 1]."""
    paths = find_mnist_files(root)
    splits = {}
    for split, images_name, labels_name in MNIST_FILES:
        splits[split] = _split(paths[images_name], paths[labels_name])
    (train_images, train_labels), (test_images, test_labels) = splits["train"], splits["test"]
    if train_images.shape[1:] != test_images.shape[1:]:
        raise ValueError(
            f"MNIST image sizes differ: train {train_images.shape[1:]} vs test {test_images.shape[1:]}"
        )
    rows, cols = train_images.shape[1:]
    return Dataset(
        name="mnist",
        x_train=_scale(train_images, 255.0),
        y_train=train_labels.astype(np.int64),
        x_test=_scale(test_images, 255.0),
        y_test=test_labels.astype(np.int64),
        image_shape=(rows, cols),
        description=(
            f"MNIST IDX files from {paths[MNIST_FILES[0][1]].parent}: {len(train_labels)} train / "
            f"{len(test_labels)} test images of {rows}x{cols} pixels"
        ),
    )


def _scale(images: np.ndarray, max_value: float) -> np.ndarray:
    flat = images.reshape(images.shape[0], -1).astype(np.float32)
    return np.ascontiguousarray(flat / np.float32(max_value))


# ---------------------------------------------------------------------------------------------
# The embedded default.


def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits, split stratified by class with a fixed seed.

    Args:
        test_fraction: share of the 1797 images held out for testing (0.2 → 1437 / 360).
        seed: the split's random seed.
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = bunch.images.astype(np.float32)  # (1797, 8, 8), grey levels 0..16
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels
    )
    return Dataset(
        name="digits",
        x_train=_scale(images[train_idx], 16.0),
        y_train=labels[train_idx],
        x_test=_scale(images[test_idx], 16.0),
        y_test=labels[test_idx],
        image_shape=images.shape[1:],
        description=(
            f"scikit-learn digits (embedded, no download): {len(train_idx)} train / {len(test_idx)} "
            f"test images of 8x8 pixels (input layer 64 wide instead of MNIST's 784)"
        ),
    )


def load_dataset(data: str | Path | None = None) -> Dataset:
    """MNIST from ``data`` when given, else the embedded digits."""
    return load_digits() if data is None else load_mnist(data)
