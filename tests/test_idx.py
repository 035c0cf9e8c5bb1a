"""The IDX reader on small files the tests write: valid, gzipped, truncated, wrong magic, mismatched."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from decaylab.data.idx import IdxError, idx_data, load_idx_dataset, read_idx, write_idx


def raw_idx(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    """An IDX file built by hand from the format description (independent of write_idx)."""
    return bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">I", n) for n in shape) + payload


def fake_mnist(root: Path, n_train: int = 30, n_test: int = 12, side: int = 6, gz: bool = True, seed: int = 0) -> Path:
    """A directory with the four standard files: random images, labels 0..9."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, side, side), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", (np.arange(n) % 10).astype(np.uint8))
    return root


def test_reads_a_hand_built_file_big_endian(tmp_path: Path) -> None:
    images = bytes(range(2 * 3 * 4))
    path = tmp_path / "imgs"
    path.write_bytes(raw_idx(0x08, (2, 3, 4), images))
    out = read_idx(path)
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    assert out[1, 2, 3] == 23
    # 16-bit signed, big-endian: bytes 01 02 are 258, FF FE is -2
    path16 = tmp_path / "i16"
    path16.write_bytes(raw_idx(0x0B, (2,), b"\x01\x02\xff\xfe"))
    assert read_idx(path16).tolist() == [258, -2]
    pathf = tmp_path / "f32"
    pathf.write_bytes(raw_idx(0x0D, (1,), struct.pack(">f", 1.5)))
    assert read_idx(pathf).tolist() == [1.5]


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_round_trip_plain_and_gzipped(tmp_path: Path, name: str, dtype: str) -> None:
    array = (np.arange(60).reshape(3, 4, 5) - 20).astype(dtype) if dtype != "u1" else np.arange(60, dtype="u1").reshape(3, 4, 5)
    path = write_idx(tmp_path / name, array)
    if name.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"  # really gzipped
    np.testing.assert_array_equal(read_idx(path), array)


def test_truncated_data_names_the_file_and_the_sizes(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(raw_idx(0x08, (10, 28, 28), bytes(100)))
    with pytest.raises(IdxError) as err:
        read_idx(path)
    message = str(err.value)
    assert str(path) in message and "truncated" in message and "7840" in message and "100" in message
    assert "\n" not in message


def test_truncated_header_and_empty_file(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">I", 10))  # 3 dims announced, 1 size given
    with pytest.raises(IdxError, match="truncated IDX file: the header"):
        read_idx(short)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(IdxError, match="truncated"):
        read_idx(empty)


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    blob = gzip.compress(raw_idx(0x08, (50, 28, 28), bytes(range(256)) * 153 + bytes(50 * 784 - 256 * 153)))
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(IdxError) as err:
        read_idx(path)
    assert str(path) in str(err.value) and "truncated" in str(err.value)


@pytest.mark.parametrize(
    "head",
    [b"\x1f\x8b\x08\x00", b"\x00\x01\x08\x03", b"\x00\x00\x07\x01", b"\x00\x00\x08\x00", b"P5\n2"],
    ids=["gzip-not-named-gz", "nonzero-byte", "bad-dtype", "zero-dims", "pgm"],
)
def test_wrong_magic_number(tmp_path: Path, head: bytes) -> None:
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(head + bytes(64))
    with pytest.raises(IdxError) as err:
        read_idx(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not an IDX file: magic number 0x{int.from_bytes(head, 'big'):08X}")


def test_trailing_bytes_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(raw_idx(0x08, (3,), b"\x01\x02\x03\x04"))
    with pytest.raises(IdxError, match="1 bytes after the 3 uint8 data"):
        read_idx(path)


def test_dataset_directory_plain_or_gzipped(tmp_path: Path) -> None:
    for gz in (True, False):
        root = fake_mnist(tmp_path / f"gz{gz}", gz=gz)
        ds = load_idx_dataset(root)
        assert ds.train_images.shape == (30, 6, 6) and ds.test_labels.shape == (12,)
        assert ds.n_features == 36 and ds.n_classes == 10


def test_label_count_mismatch_names_the_label_file(tmp_path: Path) -> None:
    root = fake_mnist(tmp_path / "d")
    write_idx(root / "train-labels-idx1-ubyte.gz", np.zeros(29, dtype=np.uint8))
    with pytest.raises(IdxError) as err:
        load_idx_dataset(root)
    assert "train-labels-idx1-ubyte.gz: 29 labels for 30 images" in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    root = fake_mnist(tmp_path / "d")
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(IdxError, match="t10k-labels-idx1-ubyte: no such file"):
        load_idx_dataset(root)
    with pytest.raises(IdxError, match="not a directory"):
        load_idx_dataset(tmp_path / "nowhere")


def test_changed_files_are_read_again(tmp_path: Path) -> None:
    root = fake_mnist(tmp_path / "d", n_train=30)
    assert len(load_idx_dataset(root).train_labels) == 30
    fake_mnist(root, n_train=40, seed=1)
    assert len(load_idx_dataset(root).train_labels) == 40


def test_idx_data_subsets_follow_the_seed(tmp_path: Path) -> None:
    root = fake_mnist(tmp_path / "d")
    a = idx_data(0, str(root), n_train=10, n_test=5)
    assert a.X_train.shape == (10, 36) and a.X_test.shape == (5, 36) and a.y_train.dtype == torch.int64
    assert 0.0 <= float(a.X_train.min()) and float(a.X_train.max()) <= 1.0
    ds = load_idx_dataset(root)
    flat = ds.train_images.reshape(30, -1) / 255.0
    rows = [int(np.argmin(np.abs(flat - x.numpy()).sum(axis=1))) for x in a.X_train]  # which images were drawn
    assert len(set(rows)) == 10 and [int(ds.train_labels[r]) for r in rows] == a.y_train.tolist()
    assert torch.equal(idx_data(0, str(root), 10, 5).X_train, a.X_train)
    assert not torch.equal(idx_data(1, str(root), 10, 5).X_train, a.X_train)
