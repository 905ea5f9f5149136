"""Benchmark: tfpvae's default VAE against the TFP and Keras example VAEs, in one process.

Every model is trained and scored in the same process, on the same data, by the same code:

* training data: MNIST train (60,000 grey images), binarised afresh at every step
  (tfpvae does it inside `train_step`; the references in their input pipeline), batch 128,
  shuffled, cached in memory, prefetched;
* test data: the first `--score-images` (500) MNIST test images, binarised once with
  `numpy.random.default_rng(seed)`;
* scoring: `tfpvae.likelihood.LikelihoodEstimator` built from each model's encoder, decoder
  and prior distributions, IWAE bound with k importance samples; each model's chunk size
  (`max_batch_elements`) is the library's default for its network, as a user gets it
  (`default_batch_elements`: 16384 pairs for tfpvae's MLP, 1024 for the references' conv
  decoders), unless `--max-batch-elements` sets one size for every model.

Figures, per model:

1. ``train_images_per_s``: training throughput at batch 128 in steady state, measured
   inside the budgeted run below (steps after the first `--warmup-steps`, which include
   the tracing, divided by their wall time, epoch boundaries included);
2. ``iwae_nll_k64``: IWAE NLL (nats, k=64) on the test images after exactly `--budget`
   seconds (default 300) of training, counted from the first step (tracing included); the
   run stops at the first step that ends past the budget (``train_seconds`` says when);
   with `--lr-schedule`, tfpvae's learning rate decays over the budget at every step
   (`tfpvae.schedules.decayed_rate` of the fraction spent, as `tfpvae train --time-budget`);
3. ``score_images_per_s``: images/s of `log_prob(..., num_samples=64)` on those images,
   after a warm-up call that traces the same chunk shape; the call is repeated until at
   least 2 s have passed (one call of tfpvae on the quick mode's 100 images takes about
   0.1 s, too short to time: two quick runs gave 17.9x and 28.1x the TFP example);
4. ``score_memory`` (tfpvae only): peak resident memory of a fresh subprocess that loads
   the trained model and scores 10,000 test images with k=1000 (chunked), with its
   resident memory before scoring and the seconds it took.

Prints one JSON line per model, a markdown table, the ratios tfpvae / reference and which
goals of issue 5 are met; `--out FILE` also writes the JSON lines there.

    python benchmarks/run.py              # full run (about 20 minutes on 2 cores)
    python benchmarks/run.py --quick      # short run (under 2 minutes)
    python benchmarks/run.py --smoke      # test-size run of the harness (seconds; numbers meaningless)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference_models  # noqa: E402
from roofline import cpu_model  # noqa: E402

import tfpvae  # noqa: E402
from tfpvae._keras import tf, tfk  # noqa: E402
from tfpvae.config import LR_SCHEDULES  # noqa: E402
from tfpvae.likelihood import DEFAULT_MAX_BATCH_ELEMENTS, MLP_MAX_BATCH_ELEMENTS, LikelihoodEstimator  # noqa: E402
from tfpvae.schedules import decayed_rate  # noqa: E402

BATCH_SIZE = 128
# Issue 5's goals, checked on every run (ratios are tfpvae / tfp_example).
GOALS = {"nll_max": 95.0, "train_ratio_min": 10.0, "score_ratio_min": 25.0, "memory_mb_max": 3072.0}
ROW_FIELDS = (
    "model",
    "parameters",
    "train_images_per_s",
    "train_steps",
    "train_seconds",
    "train_images",
    "nll_key",
    "iwae_nll",
    "nll_stderr",
    "score_images",
    "score_k",
    "score_images_per_s",
)

MODES = {
    # score_images, score_k, least seconds of timed scoring, memory images, memory k, budget (s),
    # warm-up steps, train images
    "full": dict(
        score_images=500, score_k=64, score_s=2.0, mem_images=10_000, mem_k=1000, budget=300.0, warmup=20, train=None
    ),
    "quick": dict(
        score_images=100, score_k=64, score_s=2.0, mem_images=200, mem_k=1000, budget=12.0, warmup=10, train=None
    ),
    "smoke": dict(score_images=16, score_k=8, score_s=0.0, mem_images=16, mem_k=50, budget=1.5, warmup=2, train=1024),
}


class BudgetClock(tfk.callbacks.Callback):
    """Stops training at the first step that ends `seconds` after the first step began.

    Records the end time of every step, so the steady-state throughput of the same run can
    be read off afterwards. It never stops before `min_steps` steps (a guard for test-size
    budgets shorter than the tracing; irrelevant at 300 s). With a `schedule` other than
    "constant" it sets the learning rate before every step, as `tfpvae.schedules.TimeBudget`
    does (which would stop before `min_steps`), decaying from `learning_rate` over the budget.
    """

    def __init__(self, seconds: float, min_steps: int = 1, schedule: str = "constant", learning_rate=None) -> None:
        super().__init__()
        self.seconds, self.min_steps = seconds, min_steps
        self.schedule, self.learning_rate = schedule, learning_rate
        self.start: float | None = None
        self.ends: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        now = time.perf_counter()
        if self.start is None:
            self.start = now
        if self.schedule != "constant":
            fraction = min((now - self.start) / self.seconds, 1.0)
            self.model.optimizer.learning_rate = decayed_rate(fraction, self.learning_rate, self.schedule)

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        self.ends.append(now)
        if now - self.start >= self.seconds and len(self.ends) >= self.min_steps:
            self.model.stop_training = True

    @property
    def elapsed(self) -> float:
        return self.ends[-1] - self.start if self.ends else 0.0

    def steady_images_per_s(self, warmup_steps: int, batch_size: int) -> float:
        """Images/s over the steps after the first `warmup_steps` (which include tracing)."""
        warm = min(warmup_steps, max(len(self.ends) - 2, 0))
        steps = len(self.ends) - 1 - warm
        if steps <= 0:
            return float("nan")
        return steps * batch_size / (self.ends[-1] - self.ends[warm])


def _dynamic_binarised(x: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    """Batches binarised afresh every epoch in the input pipeline (for the references)."""
    ds = _grey_batches(x, batch_size, seed, prefetch=False)
    ds = ds.map(lambda b: tf.cast(tf.random.uniform(tf.shape(b)) < b, tf.float32), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _grey_batches(x: np.ndarray, batch_size: int, seed: int, prefetch: bool = True) -> tf.data.Dataset:
    """Grey batches (tfpvae binarises inside its train step), shuffled each epoch."""
    ds = tf.data.Dataset.from_tensor_slices(x).cache().shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True).repeat()
    return ds.prefetch(tf.data.AUTOTUNE) if prefetch else ds


def _typed_overrides(pairs: list[str]) -> dict:
    """FIELD=VALUE strings -> VAEConfig keyword arguments of the fields' types."""
    defaults = tfpvae.VAEConfig()
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--tfpvae expects FIELD=VALUE; got {pair!r}")
        key, value = pair.split("=", 1)
        if not hasattr(defaults, key):
            raise SystemExit(f"--tfpvae: unknown VAEConfig field {key!r}")
        current = getattr(defaults, key)
        if current is None or isinstance(current, int) and not isinstance(current, bool):
            out[key] = float(value) if isinstance(current, float) else int(value)
        elif isinstance(current, float):
            out[key] = float(value)
        elif isinstance(current, tuple):
            out[key] = tuple(int(v) for v in value.split(","))
        else:
            out[key] = value
    return out


def _candidates(args, budget_elements: int | None) -> list[dict]:
    """Builds the models: dicts of name, trainable (has .fit), dataset factory, estimator, count."""
    models = []
    vae = tfpvae.VAE(seed=args.seed, **_typed_overrides(args.tfpvae))
    vae.compile(precision=args.precision)
    models.append(
        dict(
            name="tfpvae",
            fit=vae,
            make_ds=_grey_batches,
            estimator=LikelihoodEstimator.from_model(vae, max_batch_elements=budget_elements, precision=args.precision),
            parameters=sum(int(np.prod(w.shape)) for w in vae.trainable_weights),
            vae=vae,
        )
    )
    for name in args.references:
        ref = getattr(reference_models, name)()
        models.append(
            dict(
                name=name,
                fit=ref.model,
                make_ds=_dynamic_binarised,
                estimator=LikelihoodEstimator(
                    ref.encode,
                    ref.decode,
                    ref.prior,
                    image_shape=(28, 28, 1),
                    max_batch_elements=budget_elements or DEFAULT_MAX_BATCH_ELEMENTS,  # conv decoders
                ),
                parameters=ref.parameters,
                vae=None,
            )
        )
    return models


def _score_memory(vae, x: np.ndarray, k: int, budget_elements: int) -> dict:
    """Peak RSS of a fresh process that loads the model and scores the images `x` with k samples.

    The child reads only the model folder and a .npy of the (already binarised) images, so
    its baseline is TensorFlow plus the model; `peak_rss_mb` is the whole process's peak
    (VmHWM; Linux only), `rss_before_scoring_mb` its resident size just before `log_prob`.
    """
    with tempfile.TemporaryDirectory() as tmp:
        vae.save(Path(tmp) / "m")
        np.save(Path(tmp) / "x.npy", x, allow_pickle=False)
        code = (
            "import os, time, json, numpy as np, tfpvae\n"
            "from tfpvae.likelihood import LikelihoodEstimator\n"
            f"x = np.load({str(Path(tmp) / 'x.npy')!r})\n"
            f"m = tfpvae.load({str(Path(tmp) / 'm')!r})\n"
            f"est = LikelihoodEstimator.from_model(m, max_batch_elements={budget_elements})\n"
            "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20\n"
            "before = rss()\n"
            "t = time.perf_counter()\n"
            f"lp, se = est.log_prob(x, num_samples={k}, seed=0, return_stderr=True, progress=False)\n"
            # VmHWM, the child's own peak: Linux carries the parent's peak into ru_maxrss across exec.
            "peak = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) / 1024\n"
            "print(json.dumps({'peak_rss_mb': peak,"
            " 'rss_before_scoring_mb': before, 'rss_after_scoring_mb': rss(), 'seconds': time.perf_counter() - t,"
            " 'nll': float(-lp.mean()), 'nll_stderr': float(lp.std(ddof=1) / np.sqrt(len(lp))),"
            " 'mean_mc_stderr': float(se.mean())}))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"memory subprocess failed:\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        return {key: round(v, 2) for key, v in result.items()}


def run_model(m: dict, x_train, x_eval, x_mem, cfg: dict, args) -> dict:
    """Trains one model for the budget, scores it; returns its JSON row."""
    k = cfg["score_k"]
    # Only tfpvae's rate follows --lr-schedule; the references keep their published training.
    schedule = args.lr_schedule if m["vae"] is not None else "constant"
    rate = m["vae"].config.learning_rate if m["vae"] is not None else None
    clock = BudgetClock(cfg["budget"], min_steps=cfg["warmup"] + 3, schedule=schedule, learning_rate=rate)
    tf.random.set_seed(args.seed)
    m["fit"].fit(
        m["make_ds"](x_train, BATCH_SIZE, args.seed),
        epochs=1,
        steps_per_epoch=10**9,  # the clock stops it
        callbacks=[clock],
        verbose=0,
    )
    est = m["estimator"]
    budget_elements = est.max_batch_elements
    # Warm-up on as many images as one chunk holds, so the timed call reuses the trace.
    warm = min(len(x_eval), max(1, budget_elements // k))
    est.log_prob(x_eval[:warm], num_samples=k, seed=args.seed, progress=False)
    t0, calls = time.perf_counter(), 0
    while calls == 0 or time.perf_counter() - t0 < cfg["score_s"]:  # the same seeded call: the same lp
        lp = est.log_prob(x_eval, num_samples=k, seed=args.seed, progress=False)
        calls += 1
    score_s = (time.perf_counter() - t0) / calls
    row = {
        "model": m["name"],
        "parameters": int(m["parameters"]),
        "train_images_per_s": round(clock.steady_images_per_s(cfg["warmup"], BATCH_SIZE), 1),
        "train_steps": len(clock.ends),
        "train_seconds": round(clock.elapsed, 2),
        "train_images": len(clock.ends) * BATCH_SIZE,
        "nll_key": f"iwae_nll_k{k}",
        "iwae_nll": round(float(-lp.mean()), 3),
        "nll_stderr": round(float(lp.std(ddof=1) / math.sqrt(len(lp))), 3),
        "score_images": len(x_eval),
        "score_k": k,
        "score_images_per_s": round(len(x_eval) / score_s, 2),
        "score_max_batch_elements": budget_elements,
    }
    if m["vae"] is not None and not args.no_memory:
        row["score_memory"] = {
            "images": cfg["mem_images"],
            "k": cfg["mem_k"],
            "max_batch_elements": budget_elements,
            **_score_memory(m["vae"], x_mem, cfg["mem_k"], budget_elements),
        }
    return row


def summarise(rows: list[dict], cfg: dict, mode: str) -> dict:
    """Ratios tfpvae / reference and the goal checks."""
    base = rows[0]
    ratios = {
        r["model"]: {
            "train_throughput": round(base["train_images_per_s"] / r["train_images_per_s"], 2),
            "score_throughput": round(base["score_images_per_s"] / r["score_images_per_s"], 2),
            "nll_difference": round(base["iwae_nll"] - r["iwae_nll"], 2),
        }
        for r in rows[1:]
    }
    goals = {}
    if mode == "full":
        goals["nll_at_budget_le_95"] = base["iwae_nll"] <= GOALS["nll_max"]
    if "tfp_example" in ratios:
        goals["train_throughput_ge_10x_tfp"] = ratios["tfp_example"]["train_throughput"] >= GOALS["train_ratio_min"]
        goals["score_throughput_ge_25x_tfp"] = ratios["tfp_example"]["score_throughput"] >= GOALS["score_ratio_min"]
    if "score_memory" in base:
        goals["score_memory_lt_3GB"] = base["score_memory"]["peak_rss_mb"] < GOALS["memory_mb_max"]
    return {
        "summary": True,
        "mode": mode,
        "budget_s": cfg["budget"],
        "batch_size": BATCH_SIZE,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "tensorflow": tf.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "ratios": ratios,
        "goals_met": goals,
    }


def markdown(rows: list[dict], summary: dict) -> str:
    k = rows[0]["score_k"]
    lines = [
        f"| model | params | train img/s (batch {BATCH_SIZE}) | steps in {summary['budget_s']:.0f} s "
        f"| IWAE NLL k={k} (± s.e.) | score img/s (k={k}) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['parameters']:,} | {r['train_images_per_s']:.0f} | {r['train_steps']} "
            f"| {r['iwae_nll']:.2f} ± {r['nll_stderr']:.2f} | {r['score_images_per_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short run: 12 s budget, 100 test images (< 2 min)")
    mode.add_argument("--smoke", action="store_true", help="test-size run: tiny subsets, seconds; numbers meaningless")
    p.add_argument("--budget", type=float, help="training seconds per model (default: 300 full, 12 quick)")
    p.add_argument("--data-dir", default=os.environ.get("TFPVAE_DATA_DIR", "../shared/data"))
    p.add_argument("--references", nargs="*", default=["tfp_example", "keras_example"], choices=reference_models.NAMES)
    p.add_argument("--tfpvae", nargs="*", default=[], metavar="FIELD=VALUE", help="VAEConfig overrides")
    p.add_argument(
        "--max-batch-elements",
        type=int,
        default=None,
        help="(image, sample) pairs per scoring chunk, one size for every model (default: each model's "
        f"library default, {MLP_MAX_BATCH_ELEMENTS} for tfpvae's MLP and "
        f"{DEFAULT_MAX_BATCH_ELEMENTS} for the conv references)",
    )
    p.add_argument(
        "--precision",
        choices=("float32", "bfloat16", "auto"),
        default="float32",
        help="tfpvae's training and scoring arithmetic (default float32; the references stay float32)",
    )
    p.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default="constant",
        help="tfpvae's learning rate over the budget (default constant; the references keep theirs)",
    )
    p.add_argument("--threads", type=int, default=0, help="TF intra/inter-op threads (default 0: TF's choice)")
    p.add_argument("--no-memory", action="store_true", help="skip the k=1000 memory subprocess")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the JSON lines (rows, then the summary) to this file")
    args = p.parse_args(argv)
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    cfg = dict(MODES[mode_name])
    if args.budget is not None:
        cfg["budget"] = args.budget
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    (x_train, _), (x_test, _) = tfpvae.datasets.load("mnist", args.data_dir)
    if cfg["train"]:
        x_train = x_train[: cfg["train"]]
    n = cfg["score_images"]
    x_eval = (np.random.default_rng(args.seed).random(x_test[:n].shape) < x_test[:n]).astype(np.float32)
    n = cfg["mem_images"]
    x_mem = (np.random.default_rng(args.seed).random(x_test[:n].shape) < x_test[:n]).astype(np.float32)

    rows = []
    for m in _candidates(args, args.max_batch_elements):
        row = run_model(m, x_train, x_eval, x_mem, cfg, args)
        rows.append(row)
        print(json.dumps(row), flush=True)
        del m
    summary = summarise(rows, cfg, mode_name)
    summary.update(
        cpu_model=cpu_model(), precision=args.precision, tfpvae_overrides=args.tfpvae, lr_schedule=args.lr_schedule
    )
    print()
    print(markdown(rows, summary))
    print(f"\nratios tfpvae / reference: {json.dumps(summary['ratios'])}")
    print(f"goals met: {json.dumps(summary['goals_met'])}")
    print(json.dumps(summary), flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(json.dumps(r) for r in [*rows, summary]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
