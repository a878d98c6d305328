"""Votes per second of ``evoq-data vote`` with the local runner and with ``--runner ray`` on 1
and 2 workers, on CPU, for the ``piqe`` judge and the tiny Qwen2.5-VL (transformers engine).

    python bench/vote_scaling.py                       # defaults below
    python bench/vote_scaling.py --piqe-pairs 128 --tiny-pairs 16 --tiny-k 8

Builds a pool of 224 x 224 images and the tiny random Qwen2.5-VL in a temp folder, samples
pairs with ``evoq-data pairs``' sampler, and times whole ``run_vote`` calls into fresh
VOTES_DIRs. The Ray cluster is started once and timed on its own line (a job on a running
cluster does not pay it; ``--ray-address local`` pays it once per command). Every Ray run is
checked to give the local run's votes (all columns but created_at).

Columns: ``wall s`` the whole call, engine start-up included (in the actors, for Ray);
``first chunk s`` when the first shard was written (start-up: engine load, and for Ray the
job, Ray Data and actor start); ``votes/s`` the steady rate after that: the votes of all
chunks but the first, over the time between the first and the last shard (the shards'
created_at); ``x local`` that rate against the local runner on the same engine (the Ray
runner's overhead per chunk); ``x 1 worker`` against Ray with one worker (the scaling). A Ray
actor gets 1 CPU, and Ray gives it OMP_NUM_THREADS=1 (torch: 1 thread); the local runner gets
``--threads`` torch threads (default 1, the same) so the rows compare runners, not threads.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def steady(votes_dir: Path, started_at) -> tuple[float, float]:
    """(seconds from the call's start to the first shard, votes/s after the first shard)."""
    import pyarrow.parquet as pq

    shards = sorted((pq.read_table(p, columns=["created_at"]).column(0)[0].as_py(),
                     pq.read_metadata(p).num_rows) for p in votes_dir.glob("votes-*.parquet"))
    first, last = shards[0][0], shards[-1][0]
    span = (last - first).total_seconds()
    rate = sum(n for _, n in shards[1:]) / span if span > 0 else float("nan")
    return (first - started_at).total_seconds(), rate


def votes_without_time(votes_dir: Path) -> list[dict]:
    import pyarrow.parquet as pq

    rows = []
    for shard in sorted(votes_dir.glob("votes-*.parquet")):
        rows += pq.read_table(shard).drop_columns(["created_at"]).to_pylist()
    return sorted(rows, key=lambda r: (r["pair_id"], r["vote_index"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--piqe-pairs", type=int, default=128)
    ap.add_argument("--piqe-k", type=int, default=8)
    ap.add_argument("--tiny-pairs", type=int, default=16)
    ap.add_argument("--tiny-k", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--chunk-pairs", type=int, default=4, help="piqe")
    ap.add_argument("--tiny-chunk-pairs", type=int, default=2)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, local runner")
    args = ap.parse_args()

    import ray
    import torch
    from vote_throughput import make_pool

    from evoq_data.generation.engines import Sampling
    from evoq_data.generation.ray_session import RayOptions
    from evoq_data.generation.spec import GenerationSpec
    from evoq_data.pairs.sample import run_pairs
    from evoq_data.testing.tiny_vlm import build_tiny_vlm
    from evoq_data.votes.run import run_vote

    root = Path(tempfile.mkdtemp(prefix="evoq-scaling-"))
    make_pool(root / "pool", args.images)
    model = build_tiny_vlm(root / "tiny")
    cases = [
        ("piqe", GenerationSpec(engine="piqe"), args.piqe_pairs, args.piqe_k,
         args.chunk_pairs),
        ("tiny Qwen2.5-VL (transformers)",
         GenerationSpec(engine="transformers", model=str(model),
                        sampling=Sampling(max_tokens=args.max_tokens)),
         args.tiny_pairs, args.tiny_k, args.tiny_chunk_pairs),
    ]
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             object_store_memory=256 * 2**20, log_to_driver=False)
    cluster_s = time.perf_counter() - started
    table = []
    try:
        for name, spec, n_pairs, k, chunk_pairs in cases:
            pairs = root / f"pairs-{spec.engine}.parquet"
            run_pairs(str(root / "pool"), n_pairs, 0, pairs, quiet=True)
            runs = [("local", None), ("ray", 1), ("ray", 2)]
            results = {}
            for runner, workers in runs:
                out = root / f"votes-{spec.engine}-{runner}-{workers}"
                options = RayOptions(workers=workers) if runner == "ray" else None
                t, t_utc = time.perf_counter(), datetime.now(UTC)
                summary = run_vote(pairs, spec, out, votes_per_pair=k, seed=0,
                                   chunk_pairs=chunk_pairs, quiet=True, runner=runner,
                                   ray_options=options)
                wall = time.perf_counter() - t
                results[(runner, workers)] = (summary["votes"], wall, out,
                                              *steady(out, t_utc))
            reference = votes_without_time(results[("local", None)][2])
            local_rate = results[("local", None)][4]
            one_rate = results[("ray", 1)][4]
            for (runner, workers), (votes, wall, out, first, rate) in results.items():
                if runner == "ray":
                    assert votes_without_time(out) == reference, f"{name}: Ray votes differ"
                table.append((name, runner, workers or "-", n_pairs, votes, wall, first, rate,
                              rate / local_rate,
                              rate / one_rate if runner == "ray" else None))
    finally:
        ray.shutdown()

    print(f"\nCPU cores: {os.cpu_count()}; torch threads of the local runner: "
          f"{args.threads}; local Ray cluster start-up: {cluster_s:.1f} s "
          f"(paid once per command by `--ray-address local`, not in the rows below); "
          f"every Ray run gave the local run's votes.\n")
    print("| engine | runner | workers | pairs | votes | wall s | first chunk s | votes/s "
          "| x local | x 1 worker |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, runner, workers, n, votes, wall, first, rate, vs_local, vs_one in table:
        one = f"{vs_one:.2f}" if vs_one is not None else "-"
        print(f"| {name} | {runner} | {workers} | {n} | {votes} | {wall:.1f} | {first:.1f} "
              f"| {rate:.1f} | {vs_local:.2f} | {one} |")


if __name__ == "__main__":
    main()
