"""``evoq-data``: the data plane's commands, one thin function per stage.

Each command parses its options, builds what the stage takes (a
:class:`~evoq_data.generation.spec.GenerationSpec` for the generating ones) and calls the
stage's ``run_*`` function; results go to stdout as JSON, progress bars to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evoq_data.cli.app import emit as _emit
from evoq_data.cli.app import make_app
from evoq_data.cli.options import Quiet, Seed, generation_options
from evoq_data.core.errors import EvoqError
from evoq_data.generation.spec import GenerationSpec
from evoq_data.images.decode import DEFAULT_MAX_PIXELS

# The runner options of vote and score: one declaration each.
Runner = Annotated[str, typer.Option("--runner", help="local: in this process; ray: a pool of Ray actors, one engine each (pip install 'evoq[ray]'). Same rows, same files.")]
RayAddress = Annotated[str | None, typer.Option("--ray-address", help="--runner ray: 'auto' or HOST:PORT joins a running cluster; 'local' starts a new one (default: RAY_ADDRESS if set, else a new local cluster).")]
Workers = Annotated[int | None, typer.Option("--workers", help="--runner ray: actors, one engine each (default: as many as the cluster's GPUs, else CPUs, hold).")]
GpusPerWorker = Annotated[float | None, typer.Option("--gpus-per-worker", help="--runner ray: GPUs per actor (default: tensor_parallel_size x pipeline_parallel_size for vllm, 1 for transformers, on a cluster with GPUs; else 0).")]
CpusPerWorker = Annotated[float | None, typer.Option("--cpus-per-worker", help="--runner ray: CPUs per actor (default 1).")]

app = make_app("evoq-data", "Make, publish and evaluate EvoQuality pseudo-preference datasets.")


@app.command("pairs")
def pairs_cmd(
    images: Annotated[str | None, typer.Option("--images", help="Image folder (recursive) or HF dataset (folder or Hub id).")] = None,
    num_pairs: Annotated[int | None, typer.Option("--num-pairs", help="Distinct random pairs to sample (with --synthetic: a random subset; all by default).")] = None,
    synthetic: Annotated[Path | None, typer.Option("--synthetic", help="A folder from `evoq-data distort`: pair variants of the same reference and distortion type, known order recorded.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output pairs Parquet file.")] = Path("pairs.parquet"),
    seed: Seed = 0,
    image_column: Annotated[str, typer.Option("--image-column", help="Image column of a HF dataset.")] = "image",
    split: Annotated[str, typer.Option("--split", help="Split of a HF dataset.")] = "train",
    max_pixels: Annotated[int, typer.Option("--max-pixels", help="Skip images above this many pixels (decompression-bomb guard; replaces PIL's own 89.5 MP limit).")] = DEFAULT_MAX_PIXELS,
    quiet: Quiet = False,
) -> None:
    """Sample distinct random image pairs from a pool.

    Example: evoq-data pairs --images ./pool --num-pairs 20000 --seed 0 --out pairs.parquet
    """
    from evoq_data.pairs.sample import run_pairs

    if synthetic is not None:
        from evoq_data.pairs.synthetic import run_synthetic_pairs

        if images is not None:
            raise EvoqError("give either --images or --synthetic, not both")
        _emit(run_synthetic_pairs(synthetic, out, num_pairs=num_pairs, seed=seed))
        return
    if images is None:
        raise EvoqError("--images is required (or --synthetic DIR)")
    if num_pairs is None:
        raise EvoqError("--num-pairs is required")
    summary = run_pairs(images, num_pairs, seed, out, image_column=image_column, split=split,
                        max_pixels=max_pixels, quiet=quiet)
    for skip in summary["skipped"]:
        typer.echo(f"skipped {skip['path']}: {skip['reason']}", err=True)
    summary["skipped"] = len(summary["skipped"])
    _emit(summary)


@app.command("vote")
@generation_options()
def vote_cmd(
    pairs: Annotated[Path, typer.Option("--pairs", help="Pairs Parquet from `evoq-data pairs`.")],
    out: Annotated[Path, typer.Option("--out", help="VOTES_DIR: raw vote shards + manifest.json.")],
    spec: GenerationSpec,
    votes_per_pair: Annotated[int | None, typer.Option("--votes-per-pair", "-k", help="K sampled votes per pair (default 32, the paper's; --mode logprob: 2 rows per pair).")] = None,
    seed: Seed = 0,
    order: Annotated[str, typer.Option("--order", help="random: swap shown order per vote (paper); balanced: one vote each way in every consecutive two (K/2 each way).")] = "random",
    num_shards: Annotated[int, typer.Option("--num-shards", help="Workers splitting the pairs.")] = 1,
    shard_index: Annotated[int, typer.Option("--shard-index", help="This worker's index in [0, num-shards).")] = 0,
    chunk_pairs: Annotated[int, typer.Option("--chunk-pairs", help="Pairs per engine batch and per shard file (the most a crash can lose).")] = 64,
    runner: Runner = "local",
    ray_address: RayAddress = None,
    workers: Workers = None,
    gpus_per_worker: GpusPerWorker = None,
    cpus_per_worker: CpusPerWorker = None,
    quiet: Quiet = False,
    stop: Annotated[str, typer.Option("--stop", help="fixed: all K votes (paper); decided: stop once the majority can no longer change; confident: also stop once a Beta posterior puts the majority beyond --confidence.")] = "fixed",
    wave: Annotated[int, typer.Option("--wave", help="With --stop decided/confident: votes asked per pair at a time (even).")] = 8,
    confidence: Annotated[float | None, typer.Option("--confidence", help="With --stop confident: the posterior probability C in (0.5, 1) to stop at, e.g. 0.99.")] = None,
    mode: Annotated[str, typer.Option("--mode", help="sample: K sampled answers; logprob: P('0') and P('1') of the first answer token, one forward pass per shown order (--no-reasoning; transformers, vllm).")] = "sample",
    schedule: Annotated[str, typer.Option("--schedule", help="chunked: a chunk's pairs ask each wave together; streaming: every pair asks its next wave as soon as its last one is in, all pairs in flight (local runner, vllm engine). Same votes.")] = "chunked",
) -> None:
    """Ask the model K times per pair which image is better; keep every raw answer.

    Example: evoq-data vote --pairs pairs.parquet --model Qwen/Qwen2.5-VL-7B-Instruct
    --engine vllm --votes-per-pair 32 --out votes/

    Example: evoq-data vote ... --order balanced --stop decided --wave 8
    """
    from evoq_data.generation.ray_session import runner_options
    from evoq_data.votes.run import run_vote

    ray_options = runner_options(runner, address=ray_address, workers=workers,
                                 gpus_per_worker=gpus_per_worker,
                                 cpus_per_worker=cpus_per_worker)
    summary = run_vote(pairs, spec, out, votes_per_pair=votes_per_pair, seed=seed, order=order,
                       num_shards=num_shards, shard_index=shard_index,
                       chunk_pairs=chunk_pairs, stop=stop, wave=wave,
                       confidence=confidence, mode=mode, quiet=quiet, runner=runner,
                       ray_options=ray_options, schedule=schedule)
    _emit(summary)


# --- further stages register below (aggregate, push, score, compare, eval, distort, demo) ---


@app.command("push")
def push_cmd(
    prefs: Annotated[Path, typer.Option("--prefs", help="PREFS_DIR from `evoq-data aggregate`.")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Dataset repository OWNER/NAME.")],
    version: Annotated[str, typer.Option("--version", help="Version tag, e.g. v1 (never overwritten).")],
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
    license: Annotated[str, typer.Option("--license", help="License id for the card, e.g. apache-2.0.")] = "apache-2.0",
    images: Annotated[str | None, typer.Option("--images", help="How images are stored: embed (in every pair and once in 'images'; the default), once (only in 'images', pairs by id; evoq_data.load_preferences joins them) or none (paths only).")] = None,
    embed_images: Annotated[bool | None, typer.Option("--embed-images/--no-embed-images", help="Older spelling: --no-embed-images is --images none.")] = None,
    export: Annotated[str | None, typer.Option("--export", help="Extra configs, comma-separated: dpo, reasoning_dpo (TRL preference pairs), pseudo_mos (a 1-5 score per image). None by default.")] = None,
    export_min_agreement: Annotated[float | None, typer.Option("--export-min-agreement", help="dpo / reasoning_dpo: leave out pairs whose agreement is below this (default: keep every pair with a majority).")] = None,
    reasoning_samples: Annotated[int, typer.Option("--reasoning-samples", help="reasoning_dpo: at most this many (agreeing, disagreeing) answer pairs per pair and shown order.")] = 1,
    export_seed: Annotated[int, typer.Option("--export-seed", help="reasoning_dpo: seed of the answers drawn.")] = 0,
    include_votes: Annotated[bool, typer.Option("--include-votes", help="Also publish the raw votes as config 'votes'.")] = False,
    votes: Annotated[Path | None, typer.Option("--votes", help="VOTES_DIR for --include-votes (default: the one named in the aggregate manifest).")] = None,
    local_dir: Annotated[Path | None, typer.Option("--local-dir", help="Write the dataset repository folder here instead of uploading.")] = None,
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="Hub-compatible endpoint (default: HF_ENDPOINT or huggingface.co).")] = None,
    pool_label: Annotated[str | None, typer.Option("--pool-label", help="Name of the image pool in the card; *_path columns are relative to it (default: pool-<hash of its image ids>).")] = None,
    keep_local_paths: Annotated[bool, typer.Option("--keep-local-paths", help="Publish the absolute local paths (pool, model, votes) as they are; off by default: nothing private is published.")] = False,
    quiet: Quiet = False,
) -> None:
    """Publish a PREFS_DIR as a versioned dataset (tag VERSION) with a dataset card.

    The token comes from HF_TOKEN or the saved login (`hf auth login`) and is never printed.

    Example: evoq-data push --prefs prefs/ --repo-id me/evoq-koniq --version v1
    """
    from evoq_data.publish.exports import ExportOptions
    from evoq_data.publish.layouts import resolve_layout
    from evoq_data.publish.push import run_push

    exports = None if export is None else ExportOptions(
        configs=tuple(export.split(",")), min_agreement=export_min_agreement,
        reasoning_samples=reasoning_samples, seed=export_seed, votes=votes)
    _emit(run_push(prefs, repo_id, version, local_dir=local_dir, endpoint=endpoint,
                   private=private, license=license, images=resolve_layout(images, embed_images),
                   include_votes=include_votes, votes=votes, quiet=quiet,
                   keep_local_paths=keep_local_paths, pool_label=pool_label, exports=exports))


@app.command("aggregate")
def aggregate_cmd(
    votes: Annotated[Path, typer.Option("--votes", help="VOTES_DIR from `evoq-data vote`.")],
    out: Annotated[Path, typer.Option("--out", help="PREFS_DIR: preferences, images, stats, plots.")],
    label: Annotated[str, typer.Option("--label", help="hard: paper Eq. 1 (1/0/0.5 by majority); soft: vote fraction.")] = "hard",
    min_agreement: Annotated[float | None, typer.Option("--min-agreement", help="Keep pairs whose majority share of valid votes is at least this (0.5-1). Off by default.")] = None,
    min_valid_votes: Annotated[int | None, typer.Option("--min-valid-votes", help="Keep pairs with at least this many valid votes. Off by default.")] = None,
    allow_mixed: Annotated[bool, typer.Option("--allow-mixed", help="Aggregate votes from more than one model, prompt or sampling setting.")] = False,
    allow_incomplete: Annotated[bool, typer.Option("--allow-incomplete", help="Aggregate a VOTES_DIR whose pairs lack votes (said in stats.json and stats.md). Refused by default.")] = False,
    pairs: Annotated[Path | None, typer.Option("--pairs", help="The pairs file the votes were made from, when it moved (default: the one named in VOTES_DIR/manifest.json; its sha256 must match).")] = None,
    bt_alpha: Annotated[float, typer.Option("--bt-alpha", help="L2 penalty of the Bradley-Terry fit (choix's alpha).")] = 0.1,
    threads: Annotated[int | None, typer.Option("--threads", help="DuckDB threads (default: all cores).")] = None,
    memory_limit: Annotated[str, typer.Option("--memory-limit", help="DuckDB memory limit; it spills to disk beyond.")] = "1GB",
    lineage: Annotated[Path | None, typer.Option("--lineage", help="A JSON object file recorded as the manifest's `evolve` entry (who voted these votes; written by `evoq-train evolve`) and shown in the dataset card.")] = None,
    allow_stopped_soft: Annotated[bool, typer.Option("--allow-stopped-soft", help="--label soft on an adaptive run (vote --stop decided|confident): vote fractions over fewer votes than K (said in stats and on the card). Refused by default.")] = False,
    quiet: Quiet = False,
) -> None:
    """Turn raw votes into pseudo-preferences (majority per pair), per-image scores and stats.

    Example: evoq-data aggregate --votes votes/ --out prefs/ --min-agreement 0.7
    """
    from evoq_data.aggregate.run import run_aggregate

    _emit(run_aggregate(votes, out, label=label, min_agreement=min_agreement,
                        min_valid_votes=min_valid_votes, allow_mixed=allow_mixed,
                        allow_incomplete=allow_incomplete, pairs=pairs, quiet=quiet,
                        bt_alpha=bt_alpha, threads=threads, memory_limit=memory_limit,
                        lineage=lineage, allow_stopped_soft=allow_stopped_soft))


@app.command("score")
@generation_options()
def score_cmd(
    *,
    images: Annotated[str, typer.Option("--images", help="An image file, an image folder (recursive) or a HF dataset.")],
    out: Annotated[Path, typer.Option("--out", help="Per-sample scores Parquet (+ <stem>.summary.parquet, <stem>.manifest.json).")] = Path("scores.parquet"),
    spec: GenerationSpec,
    samples: Annotated[int, typer.Option("--samples", "-k", help="K sampled scores per image (self-consistency).")] = 8,
    seed: Seed = 0,
    chunk_images: Annotated[int, typer.Option("--chunk-images", help="Images per engine batch.")] = 32,
    image_column: Annotated[str, typer.Option("--image-column", help="Image column of a HF dataset.")] = "image",
    split: Annotated[str, typer.Option("--split", help="Split of a HF dataset.")] = "train",
    quiet: Quiet = False,
    runner: Runner = "local",
    ray_address: RayAddress = None,
    workers: Workers = None,
    gpus_per_worker: GpusPerWorker = None,
    cpus_per_worker: CpusPerWorker = None,
    stop: Annotated[str, typer.Option("--stop", help="fixed: all K samples per image (paper); interval: samples in waves, stop an image once the t interval of its mean score is narrower than --width.")] = "fixed",
    wave: Annotated[int | None, typer.Option("--wave", help="With --stop interval: samples asked per image at a time (default K/4, at least 2); stopping needs two waves of valid answers.")] = None,
    width: Annotated[float | None, typer.Option("--width", help="With --stop interval (required there): stop an image once the interval of its mean score is narrower than this, e.g. 0.25.")] = None,
    confidence: Annotated[float | None, typer.Option("--confidence", help="With --stop interval: the interval's confidence C in (0, 1) (default 0.95).")] = None,
    schedule: Annotated[str, typer.Option("--schedule", help="chunked: a chunk's images ask each wave together; streaming: every image asks its next wave as soon as its last one is in, all images in flight (local runner, vllm and openai engines). Same scores.")] = "chunked",
) -> None:
    """Score every image K times with the paper's score prompt; keep every raw answer.

    Example: evoq-data score --images ./koniq-test --model ByteDance/EvoQuality
    --engine vllm --samples 8 --out scores.parquet

    Example: evoq-data score ... --samples 32 --stop interval --width 0.25
    """
    from evoq_data.evaluate.score import run_score
    from evoq_data.generation.ray_session import runner_options

    ray_options = runner_options(runner, address=ray_address, workers=workers,
                                 gpus_per_worker=gpus_per_worker,
                                 cpus_per_worker=cpus_per_worker)
    _emit(run_score(images, spec, out, samples=samples, seed=seed, chunk_images=chunk_images,
                    image_column=image_column, split=split, quiet=quiet, runner=runner,
                    ray_options=ray_options, stop=stop, wave=wave, width=width,
                    confidence=confidence, schedule=schedule))


@app.command("compare")
@generation_options()
def compare_cmd(
    image_a: Annotated[Path, typer.Argument(help="First image (A).")],
    image_b: Annotated[Path, typer.Argument(help="Second image (B).")],
    spec: GenerationSpec,
    votes: Annotated[int, typer.Option("--votes", "-k", help="K votes, half shown A first, half B first.")] = 8,
    seed: Seed = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full tally (with raw answers) as JSON.")] = False,
) -> None:
    """Ask the model K times which of two images is better, in both shown orders.

    Example: evoq-data compare a.jpg b.jpg --model Qwen/Qwen2.5-VL-7B-Instruct --votes 32
    """
    from evoq_data.evaluate.compare import run_compare

    res = run_compare(image_a, image_b, spec, votes=votes, seed=seed)
    if as_json:
        _emit(res)
        return
    verdict = (f"better: {res['better'].upper()} ({res['better_path']})" if res["better"]
               else "better: undecided (a tie in valid votes)")
    typer.echo(verdict)
    typer.echo(f"votes: A {res['votes_a']}, B {res['votes_b']}, invalid {res['invalid_votes']} "
               f"of {res['total_votes']}")
    for order, t in res["by_order"].items():
        typer.echo(f"  shown {order.replace('_', ' ')}: A {t['a']}, B {t['b']}, invalid {t['invalid']}")
    typer.echo("parse status: " + ", ".join(f"{k} {v}" for k, v in sorted(res["parse_status"].items())))


@app.command("eval")
def eval_cmd(
    labels: Annotated[list[str], typer.Option("--labels", help="NAME=SOURCE (repeatable): a CSV/TSV/Parquet manifest (image_id or path, mos) or a HF dataset (image, mos). With --prefs also a synthetic pairs file or a distort folder.")],
    scores: Annotated[Path | None, typer.Option("--scores", help="scores.parquet (or its .summary.parquet) from `evoq-data score`, or the pseudo_mos config of a pushed dataset (its folder or Parquet file).")] = None,
    prefs: Annotated[Path | None, typer.Option("--prefs", help="PREFS_DIR from `evoq-data aggregate`, or a dataset folder or Hub id `evoq-data push` wrote (any --images layout): pseudo-label accuracy instead of metrics.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the Markdown table, JSON and plot.")] = Path("eval"),
    image_column: Annotated[str, typer.Option("--image-column", help="Image column of a HF labels dataset.")] = "image",
    mos_column: Annotated[str, typer.Option("--mos-column", help="MOS column of the labels.")] = "mos",
    split: Annotated[str, typer.Option("--split", help="Split of a HF labels dataset.")] = "test",
) -> None:
    """SRCC / PLCC of scores against MOS per benchmark, or the accuracy of pseudo-labels.

    Example: evoq-data eval --scores scores.parquet --labels koniq=koniq_test.csv
    --labels spaq=spaq_test.parquet --out eval/

    Example: evoq-data eval --prefs prefs/ --labels demo/distorted --out eval/
    """
    if (scores is None) == (prefs is None):
        raise EvoqError("give exactly one of --scores (metrics) or --prefs (pseudo-label accuracy)")
    if prefs is not None:
        from evoq_data.evaluate.accuracy import run_label_accuracy

        if len(labels) != 1:
            raise EvoqError("--prefs takes exactly one --labels")
        res = run_label_accuracy(prefs, labels[0], out, image_column=image_column,
                                 mos_column=mos_column, split=split)
        typer.echo(res["markdown"])
        typer.echo(f"written: {res['table']}, {res['json']}, {res['plot']}")
        return
    from evoq_data.evaluate.metrics import run_eval

    res = run_eval(scores, labels, out, image_column=image_column, mos_column=mos_column,
                   split=split)
    typer.echo(res["markdown"])  # registry warnings are logged (stderr) and in the table
    typer.echo(f"written: {res['table']}, {res['metrics']}, {res['plot']}")


@app.command("distort")
def distort_cmd(
    images: Annotated[str, typer.Option("--images", help="Reference images: folder (recursive) or HF dataset.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (variants + distortions.parquet).")],
    distortion: Annotated[list[str] | None, typer.Option("--distortion", help="Only these types (repeatable): blur, noise, jpeg, contrast, saturation.")] = None,
    seed: Seed = 0,
    image_column: Annotated[str, typer.Option("--image-column", help="Image column of a HF dataset.")] = "image",
    split: Annotated[str, typer.Option("--split", help="Split of a HF dataset.")] = "train",
    quiet: Quiet = False,
) -> None:
    """Make distorted variants (5 types x 5 levels) of every image, with a manifest.

    Example: evoq-data distort --images ./refs --out distorted/ && evoq-data pairs
    --synthetic distorted/ --out synth_pairs.parquet
    """
    from evoq_data.images.distort import run_distort

    _emit(run_distort(images, out, distortions=distortion, seed=seed,
                      image_column=image_column, split=split, quiet=quiet))


@app.command("demo")
@generation_options(engine="piqe")
def demo_cmd(
    *,
    out: Annotated[Path, typer.Option("--out", help="Folder for every file of the run.")] = Path("evoq-demo"),
    spec: GenerationSpec,
    votes_per_pair: Annotated[int, typer.Option("--votes-per-pair", "-k", help="K votes per pair.")] = 32,
    num_pairs: Annotated[int | None, typer.Option("--num-pairs", help="Vote on a random subset of the synthetic pairs (all by default).")] = None,
    photos: Annotated[int | None, typer.Option("--photos", help="Use only the first N bundled photos (9 by default).")] = None,
    size: Annotated[int, typer.Option("--size", help="Longer side of the photos, pixels.")] = 256,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Run the whole chain on scikit-image's bundled photos and report pseudo-label accuracy.

    Example: evoq-data demo --out evoq-demo   (PIQE judge, CPU, about half a minute)

    Example: evoq-data demo --engine transformers --model ./my-qwen --num-pairs 40 -k 8
    """
    from evoq_data.demo import run_demo

    res = run_demo(out, spec, votes_per_pair=votes_per_pair, num_pairs=num_pairs, size=size,
                   photos=photos, seed=seed, quiet=quiet)
    typer.echo(f"demo finished in {res.get('seconds', sum(res['timings_s'].values())):.1f}s "
               f"(judge: {res['model']})")
    for key in ("photos", "distorted", "pairs", "votes", "prefs", "dataset", "eval"):
        if key in res:
            typer.echo(f"  {key:<10} {res[key]}")
    typer.echo(f"  {res['num_pairs']} pairs, {res['num_votes']} votes "
               f"({res['invalid_votes']} invalid)")
    if "markdown" in res:
        typer.echo("")
        typer.echo(res["markdown"])
    if "load_with" in res:
        typer.echo(f"load it with: {res['load_with']}")



# --- votes made elsewhere --------------------------------------------------------------------

votes_app = typer.Typer(help="VOTES_DIRs from other producers (another judge, human raters).",
                        no_args_is_help=True)
app.add_typer(votes_app, name="votes")


@votes_app.command("import")
def votes_import_cmd(
    input_file: Annotated[Path, typer.Option("--input", help="CSV/TSV or Parquet, one comparison a row: image_a, image_b, winner (a/b/tie or 0/1); optional shown_first (a/b) or swapped, rater or judge.")],
    out: Annotated[Path, typer.Option("--out", help="A new VOTES_DIR (votes, pairs.parquet, manifest.json).")],
    source: Annotated[str, typer.Option("--source", help="Who made the votes (recorded as the model), e.g. 'koniq-raters' or 'gpt-judge-v2'.")],
    images_root: Annotated[Path | None, typer.Option("--images-root", help="Folder that relative image paths are relative to (default: the input file's folder); the published paths are relative to it when it holds every image.")] = None,
    duplicates: Annotated[str, typer.Option("--duplicates", help="Rows identical to an earlier row: refuse (default), keep (each is a vote) or drop (keep the first); counted in the manifest.")] = "refuse",
) -> None:
    """Turn paired comparisons made elsewhere into a VOTES_DIR that aggregate, push and
    eval --prefs use like evoq's own votes.

    Example: evoq-data votes import --input ratings.csv --source lab-raters --out votes/
    """
    from evoq_data.votes.importer import run_import

    _emit(run_import(input_file, out, source=source, images_root=images_root,
                     duplicates=duplicates))
