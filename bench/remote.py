#!/usr/bin/env python3
"""Restore from the remote cache on loopback (see BENCHMARKS.md): wanx restoring N images from an nginx
WebDAV cache into a fresh clone (an empty `.wanx/`, `--locked`, no API key), against copying the same
image files from the same server with `curl` in parallel (`xargs -P`, many URLs per curl so
connections are reused) as the peer. Prints the median of --runs runs of each, interleaved.

    python3 bench/remote.py --bin target/release/wanx [--images 1000] [--runs 3] [--parallel 16]
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

MODEL = "wan2.2-t2i-flash"
PER_PLAN = 100


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(tmp):
    d = os.path.join(tmp, "nginx")
    os.makedirs(os.path.join(d, "root", "cache"))
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 64m;
        location /cache/ {{
            root {d}/root;
            dav_methods PUT;
            create_full_put_path on;
        }}
    }}
}}
""")
    proc = subprocess.Popen(["/usr/sbin/nginx", "-c", conf, "-p", d, "-e", f"{d}/error.log"])
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}/cache", os.path.join(d, "root", "cache")
        except OSError:
            time.sleep(0.05)
    raise SystemExit("bench: nginx did not start")


def make_project(root, n):
    os.makedirs(os.path.join(root, "plans"))
    with open(os.path.join(root, "wanx.toml"), "w") as f:
        f.write(f"""[build]
jobs = 256
max_spend = 100000000

[models."{MODEL}"]
concurrency = 256
submit_rps = 5000
""")
    for p in range(0, n, PER_PLAN):
        lines = ["[defaults]", f'model = "{MODEL}"', 'size = "512*512"', ""]
        for t in range(p, min(n, p + PER_PLAN)):
            lines += ["[[task]]", f'id = "t{t:05}"', f'prompt = "remote bench image {t}, a lighthouse"', ""]
        with open(os.path.join(root, "plans", f"p{p:05}.toml"), "w") as f:
            f.write("\n".join(lines))


def clone(src, dst, with_lock=True):
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    shutil.copy(os.path.join(src, "wanx.toml"), dst)
    shutil.copytree(os.path.join(src, "plans"), os.path.join(dst, "plans"))
    if with_lock:
        shutil.copy(os.path.join(src, "wanx.lock"), dst)


def env():
    e = dict(os.environ)
    for k in ("DASHSCOPE_API_KEY", "DASHSCOPE_HTTP_BASE_URL", "WANX_REMOTE_CACHE"):
        e.pop(k, None)
    e["NO_COLOR"] = "1"
    return e


def timed(cmd, cwd):
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env(), check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=16, help="curl processes at once (wanx uses 16 requests)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="wanx-remote-bench-")
    nginx, url, store = start_nginx(tmp)
    try:
        a = os.path.join(tmp, "a")
        make_project(a, args.images)
        print(f"setup: generating {args.images} images against the emulator and uploading them (not measured)")
        timed([args.bin, "build", "--emulate", "-q", "--remote-cache", url], a)
        names = sorted(os.listdir(os.path.join(store, "cas")))
        total = sum(os.path.getsize(os.path.join(store, "cas", n)) for n in names)
        assert len(names) == args.images, f"{len(names)} blobs on the server"
        urls = "".join(f"{url}/cas/{n}\n" for n in names).encode()
        b = os.path.join(tmp, "b")
        peer_dir = os.path.join(tmp, "curl")
        wanx_times, curl_times = [], []
        for _ in range(args.runs):
            clone(a, b)
            wanx_times.append(timed([args.bin, "build", "--locked", "--emulate", "-q", "--remote-cache", url], b))
            restored = sum(len(fs) for _, _, fs in os.walk(os.path.join(b, "generated")))
            assert restored == args.images, f"wanx restored {restored}"
            shutil.rmtree(peer_dir, ignore_errors=True)
            os.makedirs(peer_dir)
            t0 = time.perf_counter()
            subprocess.run(["xargs", "-P", str(args.parallel), "-n", "64", "curl", "-sf", "--remote-name-all"],
                           input=urls, cwd=peer_dir, check=True)
            curl_times.append(time.perf_counter() - t0)
            assert len(os.listdir(peer_dir)) == args.images
        w, c = statistics.median(wanx_times), statistics.median(curl_times)
        print(f"images: {args.images}, {total / args.images / 1024:.0f} KiB each on average, {total / 2**20:.1f} MiB in all")
        print(f"wanx build --locked --remote-cache (fresh clone): {w:.2f} s = {args.images / w:.0f} images/s "
              f"(runs: {', '.join(f'{t:.2f}' for t in wanx_times)})")
        print(f"curl, xargs -P {args.parallel}, 64 URLs per curl:         {c:.2f} s = {args.images / c:.0f} images/s "
              f"(runs: {', '.join(f'{t:.2f}' for t in curl_times)})")
        print(f"ratio wanx/curl: {w / c:.2f}")
    finally:
        nginx.terminate()
        nginx.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
