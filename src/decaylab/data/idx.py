"""A reader (and writer) of IDX files, the format of MNIST and Fashion-MNIST, gzipped or not.

An IDX file is a header followed by the data, all big-endian (LeCun et al., "THE MNIST DATABASE")::

    bytes 0-1   0x00 0x00                     magic: two zero bytes,
    byte  2     dtype code (table below)             then the element type,
    byte  3     ndim >= 1                            then the number of dimensions
    4*ndim      the size of each dimension, unsigned 32-bit big-endian
    rest        prod(sizes) elements of the dtype, big-endian, C order

=========  ===========  ==========
code       type         numpy
=========  ===========  ==========
``0x08``   unsigned 8   ``u1``
``0x09``   signed 8     ``i1``
``0x0B``   signed 16    ``>i2``
``0x0C``   signed 32    ``>i4``
``0x0D``   float 32     ``>f4``
``0x0E``   float 64     ``>f8``
=========  ===========  ==========

MNIST's ``train-images-idx3-ubyte`` has magic ``0x00000803`` (ubyte, 3 dimensions: 60000×28×28) and
``train-labels-idx1-ubyte`` ``0x00000801`` (ubyte, 1 dimension: 60000). A file whose name ends in
``.gz`` is read through :mod:`gzip`. Every problem is reported as one line naming the file
(:class:`IdxError`): a wrong magic number, an unknown dtype code, a truncated or over-long file, a label
file whose count differs from its image file's.

:func:`idx_data` turns a directory of the four standard files into the train/test split the
experiments train on: ``n_train`` training and ``n_test`` test examples drawn from the seed's ``data``
stream (:mod:`decaylab.rng`), pixels scaled to [0, 1] and flattened.
"""

from __future__ import annotations

import functools
import gzip
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from decaylab.data.digits import Classification

__all__ = [
    "DTYPES",
    "IdxDataset",
    "IdxError",
    "find_idx",
    "idx_data",
    "load_idx_dataset",
    "read_idx",
    "write_idx",
]

DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder(">"): code for code, dt in DTYPES.items()}

# the standard file names (without .gz) of MNIST and Fashion-MNIST
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class IdxError(ValueError):
    """A file is not a valid IDX file, or does not fit its partner; the message names the file."""


def _open(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:  # truncated gzip streams raise EOFError
        reason = "truncated gzip stream" if isinstance(exc, EOFError) else (exc.strerror or str(exc))
        raise IdxError(f"{path}: cannot read: {reason}") from None


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in the IDX file ``path`` (``.gz``: gzipped), in native byte order.

    Raises :class:`IdxError` (one line naming the file) for a wrong magic number, an unknown dtype
    code, a header or data shorter than the header announces, or trailing bytes.
    """
    path = Path(path)
    raw = _open(path)
    if len(raw) < 4:
        raise IdxError(f"{path}: truncated IDX file: {len(raw)} bytes, shorter than the 4-byte magic number")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    magic = int.from_bytes(raw[:4], "big")
    if zero != 0 or code not in DTYPES or ndim == 0:
        codes = ", ".join(f"0x{c:02X}" for c in DTYPES)
        raise IdxError(
            f"{path}: not an IDX file: magic number 0x{magic:08X}, expected 0x0000TTNN "
            f"(two zero bytes, a dtype code TT in {{{codes}}}, NN >= 1 dimensions)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(f"{path}: truncated IDX file: the header of {ndim} dimension sizes needs {header} bytes, found {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    dims = "×".join(map(str, shape))
    if found < expected:
        raise IdxError(
            f"{path}: truncated IDX file: the header announces {dims} {dtype.name} = {expected} data bytes, found {found}"
        )
    if found > expected:
        raise IdxError(
            f"{path}: {found - expected} bytes after the {dims} {dtype.name} data the header announces (not an IDX file?)"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzipped if ``path`` ends in ``.gz``); the inverse of :func:`read_idx`."""
    path = Path(path)
    array = np.asarray(array)
    big = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    if big not in _CODES:
        raise IdxError(f"{path}: cannot write dtype {array.dtype} as IDX (one of u1, i1, i2, i4, f4, f8)")
    if array.ndim == 0:
        raise IdxError(f"{path}: cannot write a 0-dimensional array as IDX")
    blob = struct.pack(">HBB", 0, _CODES[big], array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    blob += np.ascontiguousarray(array, dtype=big).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(blob)
    else:
        path.write_bytes(blob)
    return path


def find_idx(data_dir: str | Path, stem: str) -> Path:
    """``data_dir/stem``, or ``data_dir/stem.gz`` when only that exists; :class:`IdxError` if neither."""
    data_dir = Path(data_dir)
    for name in (stem, stem + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    raise IdxError(f"{data_dir / stem}: no such file (nor {stem}.gz) in {data_dir}")


@dataclass(frozen=True)
class IdxDataset:
    """The four arrays of an MNIST-style directory: images ``(n, rows, cols)`` uint8, labels ``(n,)``."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    @property
    def n_features(self) -> int:
        return int(np.prod(self.train_images.shape[1:]))

    @property
    def n_classes(self) -> int:
        return int(max(self.train_labels.max(), self.test_labels.max())) + 1


def _pair(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = find_idx(data_dir, FILES[f"{split}_images"])
    labels_path = find_idx(data_dir, FILES[f"{split}_labels"])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim < 2:
        raise IdxError(f"{images_path}: expected images of at least 2 dimensions (n, ...), found shape {images.shape}")
    if labels.ndim != 1:
        raise IdxError(f"{labels_path}: expected labels of 1 dimension (n,), found shape {labels.shape}")
    if len(labels) != len(images):
        raise IdxError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}")
    if labels.dtype.kind not in "iu" or (len(labels) and labels.min() < 0):
        raise IdxError(f"{labels_path}: labels must be non-negative integers, found dtype {labels.dtype}")
    return images, labels


@functools.lru_cache(maxsize=2)
def _load(data_dir: str, stamp: tuple[tuple[str, int, int], ...]) -> IdxDataset:
    path = Path(data_dir)
    train_images, train_labels = _pair(path, "train")
    test_images, test_labels = _pair(path, "test")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise IdxError(
            f"{path}: training images are {'×'.join(map(str, train_images.shape[1:]))} "
            f"but test images {'×'.join(map(str, test_images.shape[1:]))}"
        )
    return IdxDataset(train_images, train_labels, test_images, test_labels)


def load_idx_dataset(data_dir: str | Path) -> IdxDataset:
    """Read ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte`` (each possibly ``.gz``) from ``data_dir``.

    Cached per directory while its files stay the same (name, size, modification time).
    """
    path = Path(data_dir).resolve()
    if not path.is_dir():
        raise IdxError(f"{data_dir}: not a directory")
    files = [find_idx(path, stem) for stem in FILES.values()]
    stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _load(str(path), stamp)


def idx_data(seed: int, data_dir: str, n_train: int, n_test: int) -> Classification:
    """``n_train`` training examples of ``data_dir``'s training files and ``n_test`` of its test files.

    Both subsets are the first rows of permutations drawn from the seed's ``data`` stream (training
    first); images are flattened and scaled by 1/255 (uint8) or by their maximum (other dtypes).
    """
    import torch

    from decaylab.data.digits import Classification
    from decaylab.rng import generator

    ds = load_idx_dataset(data_dir)
    g = generator(seed, "data")
    train_rows = torch.randperm(len(ds.train_labels), generator=g)[:n_train].numpy()
    test_rows = torch.randperm(len(ds.test_labels), generator=g)[:n_test].numpy()
    scale = 255.0 if ds.train_images.dtype == np.uint8 else float(max(np.abs(ds.train_images).max(), 1e-12))

    def features(images: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        flat = images[rows].reshape(len(rows), -1).astype(np.float32) / np.float32(scale)
        return torch.from_numpy(flat)

    return Classification(
        X_train=features(ds.train_images, train_rows),
        y_train=torch.from_numpy(ds.train_labels[train_rows].astype(np.int64)),
        X_test=features(ds.test_images, test_rows),
        y_test=torch.from_numpy(ds.test_labels[test_rows].astype(np.int64)),
        n_classes=ds.n_classes,
    )
