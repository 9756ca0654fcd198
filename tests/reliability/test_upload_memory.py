"""Memory stays flat over 5,000 uploads (issue 31): the server's RSS before, after a warm-up and at the
end, in the run's output.

A real ``uvicorn`` process serves a tiny pix2pix translator; 8 connections post small images of every
accepted kind (a JPEG with an EXIF rotation, an RGBA PNG, a grey PNG, a palette PNG with a
transparent index, a WebP) to ``POST /models/{m}/translate``. Each goes the whole way an upload
does: the body read under the size limit, its type judged from its bytes and its pixel count from
its header, decoded, EXIF orientation applied, alpha composited, converted and resized, batched
into a forward pass, and the answer encoded as a PNG.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import write_cgan
from tests.reliability.conftest import RawClient, report, run_server
from tests.translator_fixture import TRANSLATOR, write_translator

UPLOADS = 5_000
WARMUP = 500  # uploads before the "warm" reading: allocator pools and caches fill up first
CONCURRENCY = 8
MAX_GROWTH_MIB = 16.0


def uploads() -> list[tuple[bytes, str]]:
    """(body, content type) of five small images, 24–48 px (resized to the translator's 32×32)."""
    rs = np.random.RandomState(0)

    def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
        buf = io.BytesIO()
        image.save(buf, fmt, **options)
        return buf.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise
    palette = Image.fromarray(rs.randint(0, 8, (32, 32), dtype=np.uint8), "P")
    palette.putpalette([int(v) for v in rs.randint(0, 256, 8 * 3)])
    return [
        (encoded(Image.fromarray(rs.randint(0, 256, (40, 48, 3), dtype=np.uint8), "RGB"), "JPEG", exif=exif),
         "image/jpeg"),
        (encoded(Image.fromarray(rs.randint(0, 256, (36, 36, 4), dtype=np.uint8), "RGBA"), "PNG"), "image/png"),
        (encoded(Image.fromarray(rs.randint(0, 256, (24, 24), dtype=np.uint8), "L"), "PNG"), "image/png"),
        (encoded(palette, "PNG", transparency=0), "image/png"),
        (encoded(Image.fromarray(rs.randint(0, 256, (32, 32, 3), dtype=np.uint8), "RGB"), "WEBP"), "image/webp"),
    ]


async def upload_all(port: int, count: int, bodies: list[tuple[bytes, str]]) -> tuple[dict[int, int], list[str]]:
    """``count`` uploads over CONCURRENCY connections → (status → count, problems)."""
    statuses: dict[int, int] = {}
    problems: list[str] = []
    turn = iter(range(count))

    async def worker() -> None:
        client = RawClient(port)
        try:
            for i in turn:
                body, kind = bodies[i % len(bodies)]
                r = await asyncio.wait_for(client.post(f"/models/{TRANSLATOR}/translate", body, kind), 60)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code != 200 or r.headers.get("content-type") != "image/png":
                    problems.append(f"upload {i} ({kind}): {r.status_code} {r.text[:200]}")
        finally:
            await client.close()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return statuses, problems


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_memory_stays_flat_over_5000_uploads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "checkpoints"
    write_cgan(root)
    write_translator(root)
    bodies = uploads()
    with run_server(root, tmp_path, env={"GANSERVE_LOG_LEVEL": "WARNING"}) as server:
        rss_start = server.rss_mb()
        _, problems = asyncio.run(upload_all(server.port, WARMUP, bodies))
        rss_warm = server.rss_mb()
        statuses, more = asyncio.run(upload_all(server.port, UPLOADS, bodies))
        rss_end = server.rss_mb()
        log = server.output()
    with capsys.disabled():  # in the run's output, whether the test passes or not
        report(uploads=UPLOADS, rss_start_mb=rss_start, rss_warm_mb=rss_warm, rss_end_mb=rss_end,
               growth_mb=rss_end - rss_warm)
    problems += more
    assert not problems, f"{len(problems)} problem(s), e.g.:\n" + "\n".join(problems[:10])
    assert statuses == {200: UPLOADS}
    assert rss_end - rss_warm < MAX_GROWTH_MIB, (rss_start, rss_warm, rss_end)
    assert "Traceback" not in log, log[-3000:]
