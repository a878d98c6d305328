"""Bytes stored and load time of the three image layouts of `evoq-data push --images`.

    python bench/publish_layouts.py                 # runs `evoq-data demo` in a temp folder
    python bench/publish_layouts.py --demo evoq-demo --rows 1000

Pushes the demo's PREFS_DIR with `--images embed`, `once` and `none`, then for each layout:
the bytes of its `preferences` + `images` Parquet files against the distinct image bytes, and
the time to get the first ROWS pairs with both images decoded (PIL, pixels loaded) through
`evoq_data.load_preferences` from a cold `datasets` cache (its own process and cache folder).
Ratios are against `embed`, measured in the same run. Last, a projection of the stored bytes
for PAIRS pairs over IMAGES images of IMAGE_KB each (default: the paper's round, 20,000
pairs over 7,000 KonIQ-sized images).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOAD = """
import json, sys, time
import datasets, evoq_data
t0 = time.perf_counter()
root = sys.argv[3] or None
ds = evoq_data.load_preferences(sys.argv[1], images_root=root)
n = min(int(sys.argv[2]), len(ds))
rows = ds[:n]
for side in ("image_a", "image_b"):
    for im in rows[side]:
        im.load()
print(json.dumps({"rows": n, "seconds": time.perf_counter() - t0}))
"""


def folder_bytes(folder: Path, configs=("preferences", "images")) -> int:
    return sum(p.stat().st_size for c in configs for p in (folder / c).glob("*.parquet"))


def measure_load(folder: Path, rows: int, images_root: str) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "HF_DATASETS_CACHE": cache, "HF_DATASETS_OFFLINE": "1"}
        out = subprocess.run([sys.executable, "-c", LOAD, str(folder), str(rows), images_root],
                             env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", type=Path, help="an `evoq-data demo` folder (default: run one)")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=20_000)
    ap.add_argument("--images", type=int, default=7_000)
    ap.add_argument("--image-kb", type=float, default=None,
                    help="mean bytes of one image in KB for the projection (default 100)")
    args = ap.parse_args()

    from evoq_data.demo import run_demo
    from evoq_data.publish.push import run_push

    with tempfile.TemporaryDirectory() as tmp:
        demo = args.demo or Path(tmp) / "demo"
        if args.demo is None:
            run_demo(demo, quiet=True)
        manifest = json.loads((demo / "pairs.manifest.json").read_text())
        pool = str(manifest.get("source") or demo / "distorted")
        results = {}
        for layout in ("embed", "once", "none"):
            out = Path(tmp) / layout
            t = time.perf_counter()
            summary = run_push(demo / "prefs", "local/evoq-demo", "v1", local_dir=out,
                               images=layout, quiet=True)
            push_s = time.perf_counter() - t
            meta = json.loads((out / "evoq.json").read_text())
            load = measure_load(out, args.rows, pool if layout == "none" else "")
            results[layout] = {"stored": folder_bytes(out), "unique": meta["image_bytes"]["unique"],
                               "pairs": summary["rows"]["preferences"],
                               "images": summary["rows"]["images"], "push_s": push_s, **load}
    unique = results["embed"]["unique"]
    base = results["embed"]
    print(f"demo: {base['pairs']} pairs over {base['images']} images, "
          f"{unique / 1e6:.1f} MB of distinct image bytes\n")
    print("| layout | stored (preferences + images) | / distinct image bytes | vs embed "
          f"| push | load first {min(args.rows, base['pairs'])} rows with images | vs embed |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for layout, r in results.items():
        print(f"| `{layout}` | {r['stored'] / 1e6:.1f} MB | {r['stored'] / unique:.2f}x | "
              f"{r['stored'] / base['stored']:.2f}x | {r['push_s']:.1f} s | {r['seconds']:.2f} s | "
              f"{r['seconds'] / base['seconds']:.2f}x |")
    kb = args.image_kb or 100.0
    distinct = args.images * kb * 1e3
    copies = 1 + 2 * args.pairs / args.images
    print(f"\nprojection: {args.pairs:,} pairs over {args.images:,} images of {kb:.0f} KB each "
          f"({distinct / 1e9:.2f} GB distinct; scale linearly with the mean image size)")
    print(f"- embed: {distinct * copies / 1e9:.2f} GB ({copies:.2f}x: each image once in `images` "
          "plus once per pair it is in)")
    print(f"- once: {distinct / 1e9:.2f} GB (1.00x) plus the pairs' ids "
          f"(demo: {results['once']['stored'] / unique:.3f}x measured)")
    print("- none: the pairs' ids and paths only")

if __name__ == "__main__":
    main()
