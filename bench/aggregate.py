"""Benchmark `evoq-data aggregate` against a plain pandas groupby on synthetic raw votes.

    python bench/aggregate.py                     # 10M and 100M votes
    python bench/aggregate.py --sizes 1e6 --pandas-max 1e6

For each size it writes VOTES_DIR (shards in the documented vote schema, raw_text of about
400 bytes, K = 32 votes per pair, one image per two pairs, 5% invalid answers, random shown
order) and the pairs file it names under a temp folder, runs `evoq-data aggregate` as a
subprocess and (up to --pandas-max votes) a pandas baseline as another, and prints wall time
and peak RSS of each (os.wait4's ru_maxrss of that one child) and the ratios. The temp folder is deleted unless
--keep.

raw_text is drawn from 1,024 distinct ~400-byte reasoning texts: the aggregation never reads
that column (projection pushdown), so its content only changes the size of the files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

K = 32
FILES_PER_10M = 2  # shards of 5M votes
GOAL_100M_S, GOAL_100M_RSS_GB, GOAL_SPEEDUP_10M = 30.0, 2.0, 3.0

PANDAS_BASELINE = r"""
import glob, json, os, sys, numpy as np, pandas as pd, pyarrow.dataset as ds
votes_dir, out = sys.argv[1], sys.argv[2]
cols = ["pair_id", "vote_index", "image_a_id", "image_a_path", "image_b_id", "image_b_path",
        "swapped", "answer", "parse_status", "model", "prompt_sha256"]
files = sorted(glob.glob(os.path.join(votes_dir, "votes-*.parquet")))
df = ds.dataset(files, format="parquet").to_table(columns=cols).to_pandas()
valid = df["answer"].notna()
first = df["answer"] == 0
df["for_a"] = valid & (first != df["swapped"])
df["for_b"] = valid & (first == df["swapped"])
df["first"] = first
g = df.groupby("pair_id", sort=True).agg(
    image_a_id=("image_a_id", "first"), image_a_path=("image_a_path", "first"),
    image_b_id=("image_b_id", "first"), image_b_path=("image_b_path", "first"),
    votes_a=("for_a", "sum"), votes_b=("for_b", "sum"), total_votes=("answer", "size"),
    votes_first_shown=("first", "sum"))
n = g["votes_a"] + g["votes_b"]
g["invalid_votes"] = g["total_votes"] - n
g["p_star"] = np.where(n == 0, np.nan, np.where(g["votes_a"] > g["votes_b"], 1.0,
                        np.where(g["votes_a"] < g["votes_b"], 0.0, 0.5)))
g["vote_fraction_a"] = g["votes_a"] / n.replace(0, np.nan)
g["agreement"] = np.maximum(g["votes_a"], g["votes_b"]) / n.replace(0, np.nan)
z = 1.959963984540054
p = g["agreement"]
centre = (p + z * z / (2 * n)) / (1 + z * z / n)
half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
g["wilson_low"], g["wilson_high"] = centre - half, centre + half
g.reset_index().to_parquet(out, compression="zstd")
status = df["parse_status"].value_counts().to_dict()
provenance = df.groupby(["model", "prompt_sha256"]).size().to_dict()
print(json.dumps({"pairs": len(g), "status": status, "runs": len(provenance)}))
"""


def generate(votes_dir: Path, n_votes: int, seed: int = 0) -> dict:
    """Synthetic shards in the vote schema (numpy + pyarrow; constant and raw_text columns
    as dictionary arrays so that writing 100M rows takes minutes, not an hour)."""
    import hashlib

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from evoq_data.core.ids import file_sha256
    from evoq_data.core.schemas import VOTES_SCHEMA

    rng = np.random.default_rng(seed)
    n_pairs = n_votes // K
    n_images = max(n_pairs // 2, 3)
    n_files = max(1, round(n_votes / 10_000_000 * FILES_PER_10M))
    votes_dir.mkdir(parents=True)
    started = time.perf_counter()
    image_ids = pa.array([hashlib.sha256(str(i).encode()).hexdigest() for i in range(n_images)])
    image_paths = pa.array([f"/data/koniq10k/train/{i:07d}.jpg" for i in range(n_images)])
    pair_ids = pa.array([hashlib.sha256(f"pair{i}".encode()).hexdigest()[:20]
                         for i in range(n_pairs)])
    a = rng.integers(0, n_images, n_pairs)
    b = (a + 1 + rng.integers(0, n_images - 1, n_pairs)) % n_images
    q = rng.random(n_pairs)  # each pair's chance that a vote goes to image a
    filler = ("The first image shows sharper edges and cleaner textures while the second one "
              "suffers from visible blur, compression blocks around the high-contrast regions "
              "and a slight colour cast; noise in the shadows is also stronger in the second "
              "image, so overall its perceptual quality is lower, and I prefer the first. ")
    endings = ["\\boxed{0}", "\\boxed{1}", "no idea"]
    texts = pa.array([f"<think> Looking at exposure, noise, blur and artefacts (variant {t}). "
                      f"{filler}</think> {e}" for t in range(1024) for e in endings])
    constants = {
        "model": "Qwen/Qwen2.5-VL-7B-Instruct", "model_revision": "cc59489", "engine": "vllm",
        "prompt_id": "compare-reasoning", "prompt_sha256": "ab" * 32, "temperature": 1.0,
        "top_p": 1.0, "max_tokens": 1024, "evoq_version": "0.1.0",
    }
    created = np.datetime64("2026-11-26T00:00:00", "us")
    per_file = -(-n_pairs // n_files)
    # pairs per row group: 2,048 (65,536 votes). Like the vote store's own shards (64 pairs
    # per file by default), a row group then holds few distinct ids and paths, so pyarrow
    # dictionary-encodes them as it does in real shards.
    chunk = 2**11
    for f in range(n_files):
        path = votes_dir / f"votes-{f:05d}-of-{n_files:05d}-{f:016x}.parquet"
        writer = None
        try:
            for lo in range(f * per_file, min((f + 1) * per_file, n_pairs), chunk):
                hi = min(lo + chunk, (f + 1) * per_file, n_pairs)
                p = np.repeat(np.arange(lo, hi), K)
                n = len(p)
                invalid = rng.random(n) < 0.05
                swapped = rng.random(n) < 0.5
                for_a = rng.random(n) < q[p]
                answer = np.where(for_a == swapped, 1, 0).astype(np.int8)
                ending = np.where(invalid, 2, answer)
                winner = np.where(for_a, a[p], b[p])

                def const(value, n=n):
                    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)),
                                                          pa.array([value]))
                cols = {
                    "pair_id": pair_ids.take(pa.array(p)),
                    "vote_index": pa.array(np.tile(np.arange(K, dtype=np.int32), hi - lo)),
                    "image_a_id": image_ids.take(pa.array(a[p])),
                    "image_b_id": image_ids.take(pa.array(b[p])),
                    "image_a_path": image_paths.take(pa.array(a[p])),
                    "image_b_path": image_paths.take(pa.array(b[p])),
                    "swapped": pa.array(swapped),
                    "raw_text": pa.DictionaryArray.from_arrays(
                        pa.array(3 * rng.integers(0, 1024, n) + ending), texts),
                    "answer": pa.array(answer, mask=invalid),
                    "winner_id": image_ids.take(pa.array(winner, mask=invalid)),
                    "parse_status": pa.DictionaryArray.from_arrays(
                        pa.array(invalid.astype(np.int8)), pa.array(["ok", "no_box"])),
                    "seed": pa.array(p * K + np.tile(np.arange(K), hi - lo)),
                    "votes_planned": pa.array(np.full(n, K, np.int32)),
                    "stop_reason": const("fixed"),
                    "prob_0": pa.nulls(n, pa.float64()),
                    "prob_1": pa.nulls(n, pa.float64()),
                    "created_at": pa.array(np.full(n, created), pa.timestamp("us", tz="UTC")),
                }
                cols.update({k: const(v) for k, v in constants.items()
                             if isinstance(v, str)})
                cols.update({k: pa.array(np.full(n, v)) for k, v in constants.items()
                             if not isinstance(v, str)})
                arrays = [cols[name] for name in VOTES_SCHEMA.names]
                fields = [pa.field(name, arr.type) for name, arr in
                          zip(VOTES_SCHEMA.names, arrays, strict=True)]
                table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
                table = table.cast(pa.schema(
                    [pa.field(fl.name, fl.type if pa.types.is_dictionary(fl.type) else
                              VOTES_SCHEMA.field(fl.name).type) for fl in fields]))
                if writer is None:  # dictionary columns stay dictionary-encoded on disk;
                    # without the stored Arrow schema every reader sees plain strings
                    writer = pq.ParquetWriter(path, table.schema, compression="zstd",
                                              store_schema=False,
                                              dictionary_pagesize_limit=4 * 2**20)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
    # the pairs file the votes "were made from": aggregate checks every pair has its votes
    pairs_path = votes_dir.parent / "pairs.parquet"
    pq.write_table(pa.table({"pair_id": pair_ids, "image_a_id": image_ids.take(pa.array(a)),
                             "image_a_path": image_paths.take(pa.array(a)),
                             "image_b_id": image_ids.take(pa.array(b)),
                             "image_b_path": image_paths.take(pa.array(b))}), pairs_path)
    manifest = {"stage": "vote", **{k: v for k, v in constants.items() if k != "evoq_version"},
                "seed": 0, "votes_per_pair": K, "order": "random", "reasoning": True,
                "pairs_file": str(pairs_path), "pairs_sha256": file_sha256(pairs_path),
                "synthetic": True}
    (votes_dir / "manifest.json").write_text(json.dumps(manifest))
    size = sum(p.stat().st_size for p in votes_dir.glob("*.parquet"))
    return {"votes": n_pairs * K, "pairs": n_pairs, "images": n_images, "files": n_files,
            "bytes": size, "generate_s": round(time.perf_counter() - started, 1)}


def measure(cmd: list[str]) -> dict:
    """Wall time and peak RSS of one child process (os.wait4 reports that child alone)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{cmd[0]} failed: {err.read().decode()[-2000:]}")
        return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                "stdout": out.read().decode()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e7,1e8", help="comma-separated vote counts")
    ap.add_argument("--pandas-max", type=float, default=1e7,
                    help="run the pandas baseline up to this many votes (it needs ~10x RAM)")
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--memory-limit", default="1GB")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic votes")
    ap.add_argument("--votes-dir", help="reuse votes made by an earlier --keep run (one size)")
    args = ap.parse_args()
    exe = shutil.which("evoq-data") or sys.exit("evoq-data not on PATH: pip install -e .")
    results = []
    for size in [int(float(s)) for s in args.sizes.split(",")]:
        work = Path(tempfile.mkdtemp(prefix=f"evoq-bench-{size}-", dir=args.tmp))
        try:
            if args.votes_dir:
                votes = Path(args.votes_dir)
                gen = {"votes": size, "files": len(list(votes.glob("votes-*.parquet"))),
                       "bytes": sum(p.stat().st_size for p in votes.glob("votes-*.parquet")),
                       "pairs": size // K, "images": size // K // 2, "generate_s": 0.0}
            else:
                votes = work / "votes"
                gen = generate(votes, size)
            print(f"# {size:,} votes: {gen['pairs']:,} pairs, {gen['images']:,} images, "
                  f"{gen['files']} shards, {gen['bytes'] / 2**30:.2f} GiB, generated in "
                  f"{gen['generate_s']} s; load {os.getloadavg()[0]:.1f}", flush=True)
            ours = measure([exe, "aggregate", "--votes", str(votes), "--out",
                            str(work / "prefs"), "--quiet", "--threads", str(args.threads),
                            "--memory-limit", args.memory_limit])
            timings = json.loads((work / "prefs" / "manifest.json").read_text())["timings_s"]
            row = {"votes": size, **gen, "evoq_s": ours["seconds"], "evoq_cpu_s": ours["cpu_s"],
                   "evoq_rss_mb": ours["peak_rss_mb"], "evoq_steps_s": timings}
            print(f"evoq-data aggregate: {ours['seconds']} s ({ours['cpu_s']} CPU s), peak RSS "
                  f"{ours['peak_rss_mb']} MB  steps {timings}", flush=True)
            if size <= args.pandas_max:
                base = measure([sys.executable, "-c", PANDAS_BASELINE, str(votes),
                                str(work / "pandas.parquet")])
                row.update(pandas_s=base["seconds"], pandas_cpu_s=base["cpu_s"],
                           pandas_rss_mb=base["peak_rss_mb"],
                           speedup=round(base["seconds"] / ours["seconds"], 2),
                           cpu_ratio=round(base["cpu_s"] / ours["cpu_s"], 2),
                           rss_ratio=round(base["peak_rss_mb"] / ours["peak_rss_mb"], 2))
                print(f"pandas baseline:     {base['seconds']} s ({base['cpu_s']} CPU s), peak "
                      f"RSS {base['peak_rss_mb']} MB  -> evoq {row['speedup']}x faster "
                      f"({row['cpu_ratio']}x less CPU), {row['rss_ratio']}x less memory",
                      flush=True)
            else:
                print(f"pandas baseline: skipped above {args.pandas_max:.0e} votes (it loads "
                      "every row's strings into Python objects)", flush=True)
            results.append(row)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    for row in results:
        if row["votes"] == 100_000_000:
            ok = row["evoq_s"] < GOAL_100M_S and row["evoq_rss_mb"] < GOAL_100M_RSS_GB * 1024
            print(f"goal 100M < {GOAL_100M_S:.0f} s and < {GOAL_100M_RSS_GB} GB: "
                  f"{'met' if ok else 'NOT met'} ({row['evoq_s']} s, {row['evoq_rss_mb']} MB)")
        if row["votes"] == 10_000_000 and "speedup" in row:
            print(f"goal 10M >= {GOAL_SPEEDUP_10M}x pandas: "
                  f"{'met' if row['speedup'] >= GOAL_SPEEDUP_10M else 'NOT met'} "
                  f"({row['speedup']}x)")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
