"""The official DashScope Python SDK against the wanx emulator.

Needs DASHSCOPE_HTTP_BASE_URL (http://127.0.0.1:PORT/api/v1, the emulator's base URL) and
DASHSCOPE_API_KEY (any non-empty key the emulator accepts, e.g. sk-fake). Exits non-zero with the
reason on the first check that fails; prints one `sdk check: pass` line when all pass.
"""

import os
import struct
import sys
import tempfile
import urllib.request
import zlib
from http import HTTPStatus

import dashscope
from dashscope import ImageSynthesis

MODEL = "wan2.2-t2i-flash"


def fail(message):
    print(f"sdk check: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def png_size(url):
    """Downloads a result and returns the width and height in its IHDR chunk."""
    with urllib.request.urlopen(url, timeout=30) as response:
        check(response.status == 200, f"download of {url} answered {response.status}")
        data = response.read()
    check(data[:8] == b"\x89PNG\r\n\x1a\n", f"{url} is not a PNG (starts {data[:8]!r})")
    check(data[12:16] == b"IHDR", f"{url} has no IHDR chunk first")
    return struct.unpack(">II", data[16:24])


def check_succeeded(rsp, what):
    check(rsp.status_code == HTTPStatus.OK, f"{what}: status_code {rsp.status_code}, code {rsp.code}, message {rsp.message}")
    check(rsp.output.task_status == "SUCCEEDED", f"{what}: task_status {rsp.output.task_status}")
    results = rsp.output.results
    check(len(results) == 1, f"{what}: {len(results)} results, expected 1")
    size = png_size(results[0].url)
    check(size == (1024, 1024), f"{what}: image is {size[0]}x{size[1]}, expected 1024x1024")
    check(rsp.usage.image_count == 1, f"{what}: usage.image_count {rsp.usage.image_count}")


def write_png(path, width, height):
    """A grey PNG, written with the standard library only."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    rows = b"".join(b"\x00" + b"\x80" * (3 * width) for _ in range(height))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(rows)))
        f.write(chunk(b"IEND", b""))


def check_upload():
    """An image edit of a local file: the SDK uploads it (getPolicy, then a multipart POST to the
    emulator's OSS stand-in) and sends `oss://…` with X-DashScope-OssResourceResolve."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "input.png")
        write_png(path, 640, 480)
        rsp = ImageSynthesis.call(
            model="wanx2.1-imageedit",
            function="expand",
            prompt="more sky",
            base_image_url="file://" + path,
            n=1,
            left_scale=1.5,
            right_scale=1.5,
        )
    check(rsp.status_code == HTTPStatus.OK, f"image edit: status_code {rsp.status_code}, code {rsp.code}, message {rsp.message}")
    check(rsp.output.task_status == "SUCCEEDED", f"image edit: task_status {rsp.output.task_status}")
    size = png_size(rsp.output.results[0].url)
    check(size == (1280, 480), f"image edit: image is {size[0]}x{size[1]}, expected 1280x480")


def main():
    for name in ("DASHSCOPE_HTTP_BASE_URL", "DASHSCOPE_API_KEY"):
        check(os.environ.get(name), f"set {name}")

    # call = async_call + wait (the SDK polls GET /tasks/{id} on its own schedule).
    rsp = ImageSynthesis.call(model=MODEL, prompt="a cat", n=1, size="1024*1024")
    check_succeeded(rsp, "ImageSynthesis.call")

    # The same steps one at a time.
    task = ImageSynthesis.async_call(model=MODEL, prompt="a cat", n=1, size="1024*1024")
    check(task.status_code == HTTPStatus.OK, f"async_call: status_code {task.status_code}, {task.code}: {task.message}")
    check(task.output.task_status in ("PENDING", "RUNNING"), f"async_call: task_status {task.output.task_status}")
    fetched = ImageSynthesis.fetch(task)
    check(fetched.status_code == HTTPStatus.OK, f"fetch: status_code {fetched.status_code}, {fetched.code}: {fetched.message}")
    check(
        fetched.output.task_status in ("PENDING", "RUNNING", "SUCCEEDED"),
        f"fetch: task_status {fetched.output.task_status}",
    )
    done = ImageSynthesis.wait(task)
    check_succeeded(done, "ImageSynthesis.wait")

    check_upload()

    print(f"sdk check: pass (dashscope {dashscope.__version__}, {os.environ['DASHSCOPE_HTTP_BASE_URL']})")


if __name__ == "__main__":
    main()
