"""Uploaded images, taken in safely: the body read under a byte limit, the pixels counted from the
header before any is decoded, only PNG, JPEG and WebP, nothing written to disk.

``receive_upload`` reads a request's body — raw image bytes with an image content type, or
``multipart/form-data`` with a field ``image`` (and optional text fields, e.g. ``label``) — and
``decode_upload`` turns the image bytes into the model's input (run it off the event loop). The
rules (DESIGN.md, "HTTP contract"), each an ``ApiError``:

* more than ``GANSERVE_MAX_UPLOAD_BYTES``: 413 — from ``Content-Length`` before reading, else as
  soon as the bytes read pass the limit (nothing more is read);
* more than ``GANSERVE_MAX_UPLOAD_PIXELS``: 413 — judged from the header (Pillow's ``Image.open``
  reads only the header; its own decompression-bomb error is a 413 too);
* not PNG, JPEG or WebP by its bytes (whatever the content type says): 415;
* empty, undecodable or truncated, a multipart body without ``image``: 422;
* then: EXIF orientation applied, alpha composited on white, any mode (palette, 16-bit, CMYK, …)
  converted to grey or RGB, centre-cropped to a square and resized to the model's input
  (as the ``folder:`` datasets are).

The multipart body is parsed by python-multipart's streaming ``MultipartParser`` into memory
(Starlette's form parser would spool large files to a temporary file).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from app.service import ApiError

FORMATS = ("PNG", "JPEG", "WEBP")
ALLOWED_TYPES = ("image/png", "image/jpeg", "image/webp")
MULTIPART = "multipart/form-data"
MAX_FIELD_BYTES = 1024  # a text field of a multipart body (label)
MAX_PARTS = 16


def _magic_format(data: bytes) -> str | None:
    """PNG, JPEG or WEBP from the file's first bytes; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _unsupported(what: str) -> ApiError:
    return ApiError(415, f"{what}: upload a PNG, JPEG or WebP image (as the body with Content-Type "
                         f"{', '.join(ALLOWED_TYPES)}, or as the field 'image' of a {MULTIPART} body)",
                    allowed=list(ALLOWED_TYPES))


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"upload too large: at most {limit:,} bytes (GANSERVE_MAX_UPLOAD_BYTES)",
                    headers={"Connection": "close"})


@dataclass
class Upload:
    image: bytes  # the image file's bytes, not yet decoded
    fields: dict[str, str] = field(default_factory=dict)  # text fields of a multipart body


class _Form:
    """Collects the parts of a multipart body from python-multipart's callbacks: the ``image``
    part's bytes and small text fields; anything else is read past."""

    def __init__(self) -> None:
        self.image: bytearray | None = None
        self.fields: dict[str, str] = {}
        self.error: ApiError | None = None
        self._parts = 0
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._name: str | None = None
        self._is_file = False
        self._data = bytearray()
        self._keep = False

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field_cb,
            "on_header_value": self._header_value_cb, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _fail(self, error: ApiError) -> None:
        if self.error is None:
            self.error = error

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            self._fail(ApiError(422, f"multipart body: at most {MAX_PARTS} parts"))
        self._name, self._is_file, self._keep = None, False, False
        self._data = bytearray()

    def _header_field_cb(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_cb(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if bytes(self._header_field).lower() == b"content-disposition":
            _, options = parse_options_header(bytes(self._header_value))
            name = options.get(b"name")
            self._name = None if name is None else name.decode("utf-8", "replace")
            self._is_file = b"filename" in options
        self._header_field, self._header_value = bytearray(), bytearray()

    def _headers_finished(self) -> None:
        if self._name == "image":
            if self.image is not None:
                self._fail(ApiError(422, "multipart body: one field 'image', not several"))
            self._keep = True
        else:
            self._keep = self._name is not None and not self._is_file

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._keep:
            return
        self._data += data[start:end]
        if self._name != "image" and len(self._data) > MAX_FIELD_BYTES:
            self._fail(ApiError(422, f"multipart field {self._name!r}: at most {MAX_FIELD_BYTES} bytes"))
            self._keep = False

    def _part_end(self) -> None:
        if self._keep and self._name == "image":
            self.image = self._data
        elif self._keep and self._name is not None:
            if self._name in self.fields:
                self._fail(ApiError(422, f"multipart body: one field {self._name!r}, not several"))
            self.fields[self._name] = self._data.decode("utf-8", "replace")
        self._data = bytearray()


async def receive_upload(request: Request, max_bytes: int) -> Upload:
    """The uploaded image (and multipart text fields) of a request, read under ``max_bytes``."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        raise _unsupported("no Content-Type")
    kind, options = parse_options_header(content_type)
    kind_text = kind.decode("latin-1").lower()
    if kind_text != MULTIPART and not kind_text.startswith("image/"):
        raise _unsupported(f"Content-Type {kind_text or content_type!r}")
    length = request.headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > max_bytes:
        raise too_large(max_bytes)  # nothing read

    form: _Form | None = None
    parser: MultipartParser | None = None
    if kind_text == MULTIPART:
        boundary = options.get(b"boundary")
        if not boundary:
            raise ApiError(422, f"{MULTIPART} without a boundary")
        form = _Form()
        try:
            parser = MultipartParser(boundary, form.callbacks())  # type: ignore[arg-type]
        except (MultipartParseError, ValueError) as e:
            raise ApiError(422, f"{MULTIPART}: bad boundary ({e})") from None

    body = bytearray()
    read = 0
    try:
        async for chunk in request.stream():
            read += len(chunk)
            if read > max_bytes:
                raise too_large(max_bytes)  # the rest of the body is not read
            if parser is not None:
                try:
                    parser.write(chunk)
                except MultipartParseError as e:
                    raise ApiError(422, f"{MULTIPART}: malformed body ({e})") from None
                assert form is not None
                if form.error is not None:
                    raise form.error
            else:
                body += chunk
    except ClientDisconnect:
        raise ApiError(422, "the client went away before the body was complete") from None

    if form is None:
        if not body:
            raise ApiError(422, "empty body: send the image's bytes (PNG, JPEG or WebP)")
        return Upload(bytes(body))
    assert parser is not None
    try:
        parser.finalize()
    except MultipartParseError as e:
        raise ApiError(422, f"{MULTIPART}: malformed body ({e})") from None
    if form.error is not None:
        raise form.error
    if form.image is None:
        raise ApiError(422, f"{MULTIPART} body without a field 'image' (the image file)")
    if not form.image:
        raise ApiError(422, "the field 'image' is empty: attach a PNG, JPEG or WebP file")
    return Upload(bytes(form.image), form.fields)


def _bomb(max_pixels: int) -> ApiError:
    return ApiError(413, f"image too large: at most {max_pixels:,} pixels (GANSERVE_MAX_UPLOAD_PIXELS)")


def decode_upload(data: bytes, size: tuple[int, int], channels: int, max_pixels: int) -> np.ndarray:
    """The image file ``data`` as the model's input → (H, W, C) uint8, ``size`` = (H, W), C = ``channels``
    (1: grey, 3: RGB). CPU-bound: call it off the event loop."""
    if not data:
        raise ApiError(422, "empty image")
    if _magic_format(data) is None:
        raise _unsupported("not a PNG, JPEG or WebP file")
    try:
        im = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except Image.DecompressionBombError:
        raise _bomb(max_pixels) from None
    except Exception as e:  # UnidentifiedImageError, or any parse error of a broken header
        raise ApiError(422, f"undecodable image ({type(e).__name__})") from None
    with im:
        w, h = im.size
        if w * h > max_pixels:
            raise ApiError(413, f"image too large: {w}×{h} = {w * h:,} pixels, at most {max_pixels:,} "
                                "(GANSERVE_MAX_UPLOAD_PIXELS)")
        if w < 1 or h < 1:
            raise ApiError(422, f"undecodable image (size {w}×{h})")
        try:
            height, width = size
            im.draft(None, (width, height))  # JPEG: decode at the smallest DCT scale still ≥ the input
            im.load()
            return _to_input(im, size, channels)
        except ApiError:
            raise
        except Image.DecompressionBombError:
            raise _bomb(max_pixels) from None
        except Exception as e:  # truncated data ("image file is truncated"), corrupt streams, …
            raise ApiError(422, f"undecodable or truncated image ({type(e).__name__})") from None


def _to_input(im: Image.Image, size: tuple[int, int], channels: int) -> np.ndarray:
    """EXIF orientation, alpha on white, grey or RGB, centre crop, resize → (H, W, C) uint8."""
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit grey: scale to 8 bits (Pillow's own conversion would clip at 255).
        a = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    im = im.convert("L" if channels == 1 else "RGB")
    side = min(im.size)  # centre crop to a square (as the folder: datasets), then resize
    left, top = (im.width - side) // 2, (im.height - side) // 2
    height, width = size
    im = im.crop((left, top, left + side, top + side)).resize((width, height), Image.Resampling.LANCZOS)
    arr = np.array(im, np.uint8)  # a writable copy
    return arr[:, :, None] if arr.ndim == 2 else arr
