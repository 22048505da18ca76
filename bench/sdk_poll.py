"""The official DashScope Python SDK as its users call it: N tasks at once (one thread each), each
`ImageSynthesis.call` (submit, then the SDK's own wait loop), then a download of the result. Run by
bench/bench.py in the SDK's venv with DASHSCOPE_HTTP_BASE_URL pointing at its recording proxy."""

import sys
import threading
import urllib.request

from dashscope import ImageSynthesis


def one(i, model, failures):
    rsp = ImageSynthesis.call(model=model, prompt=f"sdk bench image {i}, a lighthouse at dusk", n=1,
                              size="512*512")
    if rsp.status_code != 200 or rsp.output.task_status != "SUCCEEDED":
        failures.append(f"task {i}: {rsp.status_code} {rsp.code} {rsp.message}")
        return
    with urllib.request.urlopen(rsp.output.results[0].url, timeout=60) as r:
        r.read()


def main():
    n, model = int(sys.argv[1]), sys.argv[2]
    failures = []
    threads = [threading.Thread(target=one, args=(i, model, failures)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        sys.exit("\n".join(failures))


if __name__ == "__main__":
    main()
