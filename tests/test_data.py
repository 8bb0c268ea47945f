"""The IDX loader (on files written here, byte by byte) and the embedded digits default."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits as sklearn_digits

from studies import data


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """The IDX encoding, written independently of the loader: '>I' magic, '>I' dims, bytes."""
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write(path: Path, content: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        content = gzip.compress(content)
    path.write_bytes(content)
    return path


def fake_mnist(root: Path, *, gz: bool = False, n_train: int = 6, n_test: int = 4, seed: int = 0) -> dict:
    """Write the four MNIST files with random 5x3 images; return the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 5, 3), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 5, 3), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        magic = 0x00000803 if array.ndim == 3 else 0x00000801
        write(root / name, idx_bytes(array, magic), gz=gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("subdir", [".", "raw", "MNIST/raw"])
def test_load_mnist_reads_every_layout(tmp_path, gz, subdir):
    arrays = fake_mnist(tmp_path / subdir, gz=gz)
    ds = data.load_mnist(tmp_path)
    assert ds.name == "mnist" and ds.image_shape == (5, 3)
    np.testing.assert_array_equal(ds.x_train * 255, arrays["train-images-idx3-ubyte"].reshape(6, 15))
    np.testing.assert_array_equal(ds.x_test * 255, arrays["t10k-images-idx3-ubyte"].reshape(4, 15))
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.x_train.min() >= 0 and ds.x_train.max() <= 1


def test_read_idx_detects_gzip_by_content_not_name(tmp_path):
    labels = np.arange(7, dtype=np.uint8)
    path = tmp_path / "labels-without-suffix"
    path.write_bytes(gzip.compress(idx_bytes(labels, 0x801)))
    np.testing.assert_array_equal(data.read_idx(path, data.LABELS_MAGIC), labels)


def test_bad_magic_names_the_file(tmp_path):
    path = write(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros((2, 2, 2), np.uint8), 0x801 + 2))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: magic number 0x00000803.*expected"):
        data.read_idx(path, data.LABELS_MAGIC)
    labels = write(tmp_path / "labels", idx_bytes(np.zeros(3, np.uint8), 0x801))
    with pytest.raises(ValueError, match="labels: magic number 0x00000801, expected 0x00000803"):
        data.read_idx(labels, data.IMAGES_MAGIC)


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (-1, "truncated: header declares 2x4x4 = 32 bytes of data, found 31"),
        (-40, "truncated header"),
        (-46, "2 bytes is too short"),
    ],
)
def test_truncated_file(tmp_path, cut, message):
    content = idx_bytes(np.ones((2, 4, 4), np.uint8), 0x803)
    path = write(tmp_path / "images", content[:cut])
    with pytest.raises(ValueError, match=message) as info:
        data.read_idx(path, data.IMAGES_MAGIC)
    assert str(path) in str(info.value)


def test_trailing_data(tmp_path):
    path = write(tmp_path / "images", idx_bytes(np.ones((2, 4, 4), np.uint8), 0x803) + b"\x00")
    with pytest.raises(ValueError, match="trailing data: header declares 2x4x4 = 32 bytes of data, found 33"):
        data.read_idx(path, data.IMAGES_MAGIC)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.ones((2, 4, 4), np.uint8), 0x803))[:-6])
    with pytest.raises(ValueError, match=r"images\.gz: corrupt or truncated gzip"):
        data.read_idx(path, data.IMAGES_MAGIC)


def test_count_mismatch_between_images_and_labels(tmp_path):
    fake_mnist(tmp_path)
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(np.zeros(5, np.uint8), 0x801))
    with pytest.raises(ValueError, match=r"holds 4 images but .*t10k-labels-idx1-ubyte holds 5 labels"):
        data.load_mnist(tmp_path)


def test_label_out_of_range(tmp_path):
    fake_mnist(tmp_path)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.array([0, 1, 2, 3, 4, 10], np.uint8), 0x801))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: label 10 out of range 0\.\.9"):
        data.load_mnist(tmp_path)


def test_image_sizes_must_agree(tmp_path):
    fake_mnist(tmp_path)
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((4, 3, 5), np.uint8), 0x803))
    with pytest.raises(ValueError, match=r"image sizes differ: train \(5, 3\) vs test \(3, 5\)"):
        data.load_mnist(tmp_path)


def test_missing_files_lists_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.load_mnist(tmp_path)
    message = str(info.value)
    for name in ("train-images-idx3-ubyte[.gz]", "t10k-labels-idx1-ubyte[.gz]", "MNIST/raw"):
        assert name in message


def test_incomplete_set_names_the_missing_file(tmp_path):
    fake_mnist(tmp_path / "raw")
    (tmp_path / "raw" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing t10k-images-idx3-ubyte\[\.gz\]"):
        data.load_mnist(tmp_path)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_mnist(tmp_path / "nowhere")


def test_digits_default_is_a_stratified_split_of_sklearn_digits():
    ds = data.load_digits()
    assert ds.name == "digits" and ds.image_shape == (8, 8) and ds.n_features == 64
    assert ds.x_train.shape == (1437, 64) and ds.x_test.shape == (360, 64)
    assert "8x8" in ds.description and "64" in ds.description
    # every row is an sklearn image scaled by 1/16, with its own label; no image is in both splits
    oracle = sklearn_digits()
    label_of = {row.tobytes(): label for row, label in zip(oracle.data / 16, oracle.target, strict=True)}
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert [label_of[row.astype(np.float64).tobytes()] for row in x] == y.tolist()
    # per-class test shares match the 20% split within one image
    counts = np.bincount(ds.y_test, minlength=10)
    expected = 0.2 * np.bincount(oracle.target, minlength=10)
    assert np.all(np.abs(counts - expected) <= 1)


def test_digits_split_is_deterministic():
    a, b = data.load_digits(), data.load_digits()
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.y_test, data.load_digits(seed=1).y_test)


def test_load_dataset_defaults_to_digits(tmp_path):
    assert data.load_dataset(None).name == "digits"
    fake_mnist(tmp_path)
    assert data.load_dataset(tmp_path).name == "mnist"
