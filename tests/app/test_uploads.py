"""Uploaded images (app/uploads.py): every rule of the contract, on the decoder and over HTTP.

The hostile files are crafted here: tiny PNGs and JPEGs whose headers declare huge sizes (pixel
bombs), truncated files, other types; and the tolerated oddities: EXIF rotation, alpha, palettes
with transparency, 16-bit grey, CMYK."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.requests import Request

from app.main import create_app
from app.service import ApiError
from app.uploads import decode_upload, receive_upload
from tests.app.conftest import make_settings, wait_ready

SIZE = (28, 28)
MAX_PIXELS = 4096 * 4096


def encoded(im: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def noise(mode: str = "RGB", size: tuple[int, int] = (64, 64), seed: int = 0) -> Image.Image:
    a = np.random.RandomState(seed).randint(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    return Image.fromarray(a[:, :, 0] if mode == "L" else a, mode)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A ~70-byte PNG whose header declares width × height grey pixels (its data is one tiny deflate stream)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + png_chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG with its frame header (SOF0) patched to declare width × height."""
    data = bytearray(encoded(noise("L", (16, 16)), "JPEG"))
    at = data.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height (2), width (2)
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


def decode(data: bytes, channels: int = 1, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    return decode_upload(data, SIZE, channels, max_pixels)


def status_of(data: bytes, max_pixels: int = MAX_PIXELS) -> int:
    with pytest.raises(ApiError) as e:
        decode(data, max_pixels=max_pixels)
    return e.value.status


# --- the decoder ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_png_jpeg_and_webp_are_decoded_to_the_models_input(fmt: str) -> None:
    grey = decode(encoded(noise("RGB", (100, 60)), fmt))
    rgb = decode(encoded(noise("RGB", (100, 60)), fmt), channels=3)
    assert grey.shape == (28, 28, 1) and rgb.shape == (28, 28, 3) and grey.dtype == np.uint8


@pytest.mark.parametrize("make", [png_declaring, jpeg_declaring])
@pytest.mark.parametrize("side", [5000, 60_000])  # past our limit; past Pillow's own bomb threshold too
def test_pixel_bombs_declared_in_the_header_are_413_before_decoding(make, side: int) -> None:
    bomb = make(side, side)
    assert len(bomb) < 2000
    with pytest.raises(ApiError) as e:
        decode(bomb)
    assert e.value.status == 413 and "pixels" in e.value.detail


def test_the_pixel_limit_is_the_setting() -> None:
    image = encoded(noise("L", (40, 30)))
    assert status_of(image, max_pixels=40 * 30 - 1) == 413
    assert decode(image, max_pixels=40 * 30).shape == (28, 28, 1)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_files_are_422(fmt: str) -> None:
    whole = encoded(noise("RGB", (128, 128)), fmt)
    assert status_of(whole[: len(whole) // 2]) == 422
    assert status_of(whole[:20]) == 422


@pytest.mark.parametrize("data", [
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
    encoded(noise("RGB", (16, 16)), "GIF"),
    encoded(noise("RGB", (16, 16)), "BMP"),
    encoded(noise("RGB", (16, 16)), "TIFF"),
    b"just some text",
])
def test_other_types_are_415(data: bytes) -> None:
    assert status_of(data) == 415


def test_empty_and_garbage_after_a_real_signature_are_422() -> None:
    assert status_of(b"") == 422
    assert status_of(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40) == 422
    assert status_of(b"\xff\xd8\xff" + b"\x00" * 40) == 422


def test_exif_orientation_is_applied() -> None:
    """Top half white, bottom half black, stored with EXIF orientation 3 (rotate 180°) or 6 (90° clockwise)."""
    a = np.zeros((64, 64), np.uint8)
    a[:32] = 255
    im = Image.fromarray(a, "L")
    plain = decode(encoded(im, "JPEG", quality=95))[:, :, 0].astype(int)
    assert plain[:10].mean() > 200 and plain[-10:].mean() < 50
    for orientation, bright in ((3, "bottom"), (6, "right")):
        exif = Image.Exif()
        exif[0x0112] = orientation
        out = decode(encoded(im, "JPEG", quality=95, exif=exif.tobytes()))[:, :, 0].astype(int)
        if bright == "bottom":
            assert out[-10:].mean() > 200 and out[:10].mean() < 50
        else:
            assert out[:, -10:].mean() > 200 and out[:, :10].mean() < 50


def test_alpha_is_composited_on_white() -> None:
    clear_black = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    assert decode(encoded(clear_black)).min() == 255
    assert decode(encoded(clear_black, "WEBP", lossless=True), channels=3).min() == 255
    assert decode(encoded(Image.new("LA", (32, 32), (0, 0)))).min() == 255
    half = Image.new("RGBA", (32, 32), (0, 0, 0, 128))
    assert abs(int(decode(encoded(half))[0, 0, 0]) - 127) <= 2
    opaque_red = decode(encoded(Image.new("RGBA", (32, 32), (255, 0, 0, 255))), channels=3)
    assert tuple(opaque_red[0, 0]) == (255, 0, 0)


def test_a_palette_with_a_transparent_entry_is_composited_on_white() -> None:
    p = Image.new("P", (32, 32), 0)
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * (256 * 3 - 6))
    p.paste(1, (0, 0, 16, 32))  # left half: entry 1 (opaque, dark); right half: entry 0 (transparent)
    out = decode(encoded(p, transparency=0), channels=3)
    assert out[:, -5:].min() == 255 and out[:, :5].max() < 40


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    a = np.full((32, 32), 32768, np.uint16)  # mid-grey in 16 bits
    im = Image.fromarray(a)
    assert im.mode == "I;16"
    out = decode(encoded(im))
    assert abs(int(out[0, 0, 0]) - 128) <= 1


def test_cmyk_jpeg_is_converted() -> None:
    white = Image.new("CMYK", (32, 32), (0, 0, 0, 0))
    out = decode(encoded(white, "JPEG", quality=95), channels=3)
    assert out.min() >= 250


def test_grey_and_rgb_inputs_go_to_either_channel_count() -> None:
    assert decode(encoded(Image.new("L", (30, 30), 200)), channels=3).shape == (28, 28, 3)
    assert int(decode(encoded(Image.new("RGB", (30, 30), (200, 200, 200))))[5, 5, 0]) == 200


# --- reading the body ---------------------------------------------------------------------------


def _request(headers: dict[str, str], chunks: list[bytes]) -> tuple[Request, list[int]]:
    """A request whose body arrives in ``chunks``; the list counts the chunks the app asked for."""
    pulled = [0]

    async def receive() -> dict[str, object]:
        i = pulled[0]
        pulled[0] += 1
        if i >= len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[i], "more_body": i < len(chunks) - 1}

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw, "query_string": b""},
                   receive), pulled


def test_an_oversized_body_is_refused_and_read_no_further() -> None:
    chunks = [b"\x89PNG" + b"x" * 996] + [b"x" * 1000] * 99  # 100 kB in 1 kB chunks, no Content-Length
    request, pulled = _request({"content-type": "image/png"}, chunks)
    with pytest.raises(ApiError) as e:
        asyncio.run(receive_upload(request, 10_000))
    assert e.value.status == 413 and "10,000 bytes" in e.value.detail
    assert pulled[0] == 11  # the chunk that passed the limit was the last one read


def test_a_declared_content_length_over_the_limit_is_refused_unread() -> None:
    request, pulled = _request({"content-type": "image/png", "content-length": "10001"}, [b"x" * 10001])
    with pytest.raises(ApiError) as e:
        asyncio.run(receive_upload(request, 10_000))
    assert e.value.status == 413 and pulled[0] == 0


def test_multipart_bodies_are_read_within_the_limit_too() -> None:
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + b"x" * 50_000 + f"\r\n--{boundary}--\r\n".encode()
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    request, pulled = _request({"content-type": f"multipart/form-data; boundary={boundary}"}, chunks)
    with pytest.raises(ApiError) as e:
        asyncio.run(receive_upload(request, 10_000))
    assert e.value.status == 413 and pulled[0] == 11


# --- over HTTP -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http(tiny_checkpoints: Path) -> Iterator[TestClient]:
    app = create_app(make_settings(tiny_checkpoints, projection_steps=2, max_upload_bytes=100_000,
                                   max_upload_pixels=1_000_000))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


URL = "/models/tiny-cgan/encode?label=circle"


def test_http_raw_body_and_multipart_give_the_same_latent(http: TestClient) -> None:
    image = encoded(noise("RGB", (50, 40)), "JPEG")
    raw = http.post(URL, content=image, headers={"content-type": "image/jpeg"})
    form = http.post("/models/tiny-cgan/encode", files={"image": ("x.jpg", image, "image/jpeg")},
                     data={"label": "0"})
    # The type is judged from the bytes: a JPEG sent as image/png is a JPEG.
    mislabelled = http.post(URL, content=image, headers={"content-type": "image/png"})
    assert raw.status_code == form.status_code == mislabelled.status_code == 200, raw.text
    assert raw.json()["z"] == form.json()["z"] == mislabelled.json()["z"]


@pytest.mark.parametrize(("body", "content_type", "status", "words"), [
    (b"", "image/png", 422, "empty body"),
    (png_declaring(2000, 2000), "image/png", 413, "pixels"),
    (jpeg_declaring(2000, 2000), "image/jpeg", 413, "pixels"),
    (encoded(noise("RGB", (64, 64)), "GIF"), "image/gif", 415, "PNG, JPEG or WebP"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", 415, "PNG, JPEG or WebP"),
    (b"hello", "text/plain", 415, "Content-Type"),
    (b'{"image": 1}', "application/json", 415, "Content-Type"),
    (encoded(noise("RGB", (64, 64)))[:300], "image/png", 422, "truncated"),
    (b"x" * 100_001, "image/png", 413, "100,000 bytes"),
])
def test_http_upload_errors(http: TestClient, body: bytes, content_type: str, status: int, words: str) -> None:
    r = http.post(URL, content=body, headers={"content-type": content_type})
    assert r.status_code == status and words in r.json()["detail"], r.text


def test_http_oversized_body_without_content_length(http: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(200):
            yield b"x" * 1000

    r = http.post(URL, content=chunks(), headers={"content-type": "image/png"})
    assert r.status_code == 413 and "100,000 bytes" in r.json()["detail"]


def test_http_multipart_errors(http: TestClient) -> None:
    no_image = http.post(URL, files={"picture": ("x.png", encoded(noise()), "image/png")})
    assert no_image.status_code == 422 and "'image'" in no_image.json()["detail"]
    only_fields = http.post(URL, data={"label": "1"}, files={"other": ("x.txt", b"hi", "text/plain")})
    assert only_fields.status_code == 422
    two = http.post(URL, files=[("image", ("a.png", encoded(noise()), "image/png")),
                                ("image", ("b.png", encoded(noise()), "image/png"))])
    assert two.status_code == 422 and "one field 'image'" in two.json()["detail"]
    labels = http.post("/models/tiny-cgan/encode", files={"image": ("a.png", encoded(noise()), "image/png")},
                       data={"label": ["0", "1"]})
    assert labels.status_code == 422 and "one field 'label'" in labels.json()["detail"]
    svg = http.post(URL, files={"image": ("x.svg", b"<svg/>", "image/svg+xml")})
    assert svg.status_code == 415
    no_boundary = http.post(URL, content=b"--x\r\n", headers={"content-type": "multipart/form-data"})
    assert no_boundary.status_code == 422
    garbage = http.post(URL, content=b"not multipart at all",
                        headers={"content-type": "multipart/form-data; boundary=zz"})
    assert garbage.status_code == 422
