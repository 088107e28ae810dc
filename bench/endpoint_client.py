"""The endpoint client against the mock endpoint (a separate process on loopback), in one run.

1. Overhead: a 300-slice CT (512², int16) through the 2D path — PNGs written once by
   ``mip-gateway convert``, then streamed by the client from disk — against a zero-latency mock.
   Reports total wall time / time spent inside the endpoint's handler (from the mock's /stats),
   with 1 request in flight (pure overhead) and with the default 2; client encode + decode ms per
   slice measured alone; and the client process's peak RSS / the series' uncompressed pixel bytes
   (target ≤ 4).
2. Throughput: an endpoint that takes 200 ms per request and allows 4 in flight; achieved average
   requests in flight (handler seconds / wall seconds) / 4 (target ≥ 0.9).

    python bench/endpoint_client.py [--slices 300] [--requests 80]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench.ctgen import ct_series

CLI = str(Path(sys.executable).with_name("mip-gateway"))


def start_mock(*flags: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([CLI, "mock-endpoint", "--port", "0", *flags], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    return proc, line.rsplit(" ", 1)[-1]


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=10)


def client_run(png_dir: Path, url: str, in_flight: int, batch: int) -> dict[str, Any]:
    """Runs in its own process so its peak RSS is the client's alone."""
    from config.settings import EndpointSettings
    from workers.endpoint.client import EndpointClient, ImageRequest

    files = sorted(p for p in png_dir.glob("*.png"))
    settings = EndpointSettings(url=url, model="2d", max_in_flight=in_flight, max_images_per_request=batch)
    requests = (ImageRequest(n, path.read_bytes(), ("liver",)) for n, path in enumerate(files))
    start = time.perf_counter()
    with EndpointClient("bench", settings) as client:
        count = sum(1 for _ in client.predict_2d(requests))
    wall = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"images": count, "wall_s": wall, "peak_rss_mb": rss_mb}


def run_client(png_dir: Path, url: str, in_flight: int, batch: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", str(png_dir), url, str(in_flight), str(batch)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def codec_ms_per_slice(png_dir: Path, batch: int) -> tuple[float, float]:
    """Client-side encode (request JSON) and decode (response → arrays) per slice, alone."""
    import numpy as np

    from workers.endpoint.contract import Row, decode_2d_response, encode_2d_item, encode_request

    files = sorted(png_dir.glob("*.png"))
    rows = [Row(p.read_bytes(), ("liver",)) for p in files]
    encode, decode = 0.0, 0.0
    item = encode_2d_item(np.zeros((1, 1024, 1024), np.uint8), ["liver"])
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        t0 = time.perf_counter()
        encode_request(chunk)
        t1 = time.perf_counter()
        body = json.loads(json.dumps([item] * len(chunk)))
        t2 = time.perf_counter()
        decode_2d_response(body, [1] * len(chunk))
        decode += time.perf_counter() - t2
        encode += t1 - t0
    return 1000 * encode / len(rows), 1000 * decode / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--requests", type=int, default=80)
    parser.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        png_dir, url, in_flight, batch = args.client
        print(json.dumps(client_run(Path(png_dir), url, int(in_flight), int(batch))))
        return

    series = ct_series(args.slices, 512)
    work = Path(tempfile.mkdtemp(prefix="bench-endpoint-"))
    subprocess.run([CLI, "convert", str(series), "--to", "png", "--window", "abdomen", "--out", str(work)],
                   check=True, capture_output=True)  # fmt: skip
    (png_dir,) = [p for p in work.iterdir() if p.is_dir()]
    pixel_mb = args.slices * 512 * 512 * 2 / 1e6
    results: dict[str, Any] = {"bench": "endpoint_client", "slices": args.slices, "pixel_mb": pixel_mb}

    mock, url = start_mock()
    try:
        for in_flight in (1, 2):
            httpx.delete(f"{url}/stats")
            run = run_client(png_dir, f"{url}/score", in_flight, 16)
            run["handler_s"] = httpx.get(f"{url}/stats").json()["handler_seconds"]
            run["wall_over_handler"] = run["wall_s"] / run["handler_s"]
            results[f"in_flight_{in_flight}"] = run
    finally:
        stop(mock)
    encode_ms, decode_ms = codec_ms_per_slice(png_dir, 16)
    results["encode_ms_per_slice"], results["decode_ms_per_slice"] = encode_ms, decode_ms

    slow, url = start_mock("--latency-ms", "200")
    try:
        small = work / "small"
        small.mkdir()
        for n, path in enumerate(sorted(png_dir.glob("*.png"))[: args.requests]):
            os.link(path, small / f"{n:04d}.png")
        httpx.delete(f"{url}/stats")
        throughput = run_client(small, f"{url}/score", 4, 1)
        stats = httpx.get(f"{url}/stats").json()
        throughput.update(requests=stats["requests"], in_flight_max=stats["in_flight_max"])
        throughput["average_in_flight"] = stats["handler_seconds"] / throughput["wall_s"]
        results["throughput"] = throughput
    finally:
        stop(slow)
    report(args.slices, pixel_mb, results)


def report(slices: int, pixel_mb: float, results: dict[str, Any]) -> None:
    print(f"{slices} slices of 512² CT through the 2D client, zero-latency mock on loopback")
    for n in (1, 2):
        run = results[f"in_flight_{n}"]
        print(f"  {n} in flight: wall {run['wall_s']:.2f} s / handler {run['handler_s']:.2f} s"
              f" = {run['wall_over_handler']:.2f}")  # fmt: skip
    print(f"  client encode {results['encode_ms_per_slice']:.2f} ms/slice,"
          f" decode {results['decode_ms_per_slice']:.2f} ms/slice")  # fmt: skip
    rss = max(results["in_flight_1"]["peak_rss_mb"], results["in_flight_2"]["peak_rss_mb"])
    print(f"  client peak RSS {rss:.0f} MB / series pixels {pixel_mb:.0f} MB = {rss / pixel_mb:.2f} (≤ 4)")
    tp = results["throughput"]
    average = tp["average_in_flight"]
    print(f"200 ms endpoint, 4 in flight, {tp['requests']} requests: average in flight {average:.2f}"
          f" / 4 = {average / 4:.2f} (≥ 0.9), peak {tp['in_flight_max']}")  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
