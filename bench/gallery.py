#!/usr/bin/env python3
"""The gallery at 1,000 tasks (see BENCHMARKS.md): times `wanx gallery` (first run, which makes every
thumbnail, and a second, which finds them cached) and the page's load in headless Chromium (driven
over WebDriver by chromedriver on 127.0.0.1): navigation to the load event, and the longest script
task while scrolling through every card. Prints figures; asserts nothing.

    python3 bench/gallery.py --bin target/release/wanx [--tasks 1000]

Needs /usr/bin/chromium and /usr/bin/chromedriver (`apt-get install chromium chromium-driver`).
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def project(root, tasks):
    os.makedirs(os.path.join(root, "plans"))
    with open(os.path.join(root, "wanx.toml"), "w") as f:
        f.write('[build]\nmax_spend = 1000.0\njobs = 64\n')
    sizes = ["512*512", "768*512", "512*768"]
    with open(os.path.join(root, "plans", "many.toml"), "w") as f:
        f.write('[defaults]\nmodel = "wan2.2-t2i-flash"\n\n')
        for i in range(tasks):
            f.write(f'[[task]]\nid = "t{i:05}"\nprompt = "bench image number {i}, a quiet harbor at dusk"\n'
                    f'size = "{sizes[i % 3]}"\nseed = {i}\n\n')


def timed(cmd, cwd):
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


class Driver:
    def __init__(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.proc = subprocess.Popen(["/usr/bin/chromedriver", f"--port={self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                if self.call("GET", "/status")["ready"]:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit("chromedriver did not start")
            time.sleep(0.05)
        self.profile = tempfile.mkdtemp()
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1280,900",
                     f"--user-data-dir={self.profile}"]}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.load(r)["value"]

    def open(self, url):
        self.call("POST", f"/session/{self.session}/url", {"url": url})

    def eval(self, script, args=()):
        return self.call("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": list(args)})

    def close(self):
        try:
            self.call("DELETE", f"/session/{self.session}")
        finally:
            self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--tasks", type=int, default=1000)
    args = ap.parse_args()
    wanx = os.path.abspath(args.bin)
    root = tempfile.mkdtemp(prefix="wanx-gallery-bench-")
    try:
        project(root, args.tasks)
        build = timed([wanx, "build", "--emulate", "-q"], root)
        cold = timed([wanx, "gallery", "--emulate"], root)
        warm = timed([wanx, "gallery", "--emulate"], root)
        index = os.path.join(root, ".wanx", "gallery", "index.html")
        size = os.path.getsize(index)
        print(f"tasks: {args.tasks} (build --emulate {build:.1f} s)")
        print(f"wanx gallery, first run (makes {args.tasks} thumbnails): {cold:.2f} s")
        print(f"wanx gallery, second run (thumbnails cached): {warm:.2f} s")
        print(f"index.html: {size / 1024:.0f} KiB")
        driver = Driver()
        try:
            loads = []
            for _ in range(3):
                driver.open("about:blank")
                driver.open("file://" + index)
                t = driver.eval("var n = performance.getEntriesByType('navigation')[0];"
                                "return {dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd,"
                                " cards: document.querySelectorAll('.card').length};")
                loads.append(t)
            best = min(loads, key=lambda t: t["load"])
            print(f"page load (file://, best of 3): DOMContentLoaded {best['dcl']:.0f} ms, "
                  f"load event {best['load']:.0f} ms, {best['cards']} cards")
            # Scroll through every card, measuring the longest main-thread task (responsiveness).
            driver.eval("window.__long = 0; new PerformanceObserver(function (l) { l.getEntries().forEach("
                        "function (e) { window.__long = Math.max(window.__long, e.duration); }); })"
                        ".observe({entryTypes: ['longtask']});")
            start = time.perf_counter()
            steps = driver.eval("var h = document.documentElement.scrollHeight, n = 0;"
                                "for (var y = 0; y < h; y += 900) { window.scrollTo(0, y); n++; } return n;")
            filt = driver.eval("var t = performance.now(), s = document.getElementById('f-status');"
                               "s.value = 'fresh'; s.dispatchEvent(new Event('change'));"
                               "s.value = ''; s.dispatchEvent(new Event('change'));"
                               "return performance.now() - t;")
            scroll = time.perf_counter() - start
            longest = driver.eval("return window.__long;")
            print(f"scroll through {steps} screens: {scroll:.2f} s; longest main-thread task {longest:.0f} ms; "
                  f"filter by status and back: {filt:.0f} ms")
        finally:
            driver.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
