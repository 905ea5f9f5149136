"""Step time: milliseconds per training step of candidate models, to size a recipe before a long run.

A two-hour best-likelihood run is planned from step times: epochs that fit in the budget
are (budget / (steps per epoch * time per step)). This script times `tfpvae.VAE.fit` steps
of a base model and of variants of it, in one process and interleaved (each round times
every candidate once, in turn), so a machine that speeds up or slows down during the run
moves all candidates alike. It reports the median over rounds, in ms per step and as a
ratio to the first candidate, of wall time and of the process's CPU time (every thread's):
on a host that hands out CPU in slices (wall times that jump between a few values) the
CPU time is the steadier measure of what a model costs.

    python benchmarks/step_time.py --threads 2 \\
        --candidate mixture10:prior=mixture,num_components=10 \\
        --candidate vamp100:prior=vamp,num_components=100 \\
        --candidate vamp500:prior=vamp,num_components=500

Each `--candidate NAME:FIELD=VALUE,...` overrides `VAEConfig` fields of the base model
(`--base`, default the static-MNIST recipe's latent 32, 256 units, k=4 IWAE training);
values are read as JSON where they parse (numbers, true/false) and as strings otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import tfpvae
from tfpvae._keras import tf
from tfpvae.config import VAEConfig

BASE = "architecture=mlp,latent_dim=32,hidden_units=256,train_samples=4,learning_rate=1e-3,seed=0"


def parse_fields(text: str, flag: str) -> dict:
    """'a=1,b=mlp' -> {'a': 1, 'b': 'mlp'}; a clear error naming `flag` otherwise."""
    fields = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"`{flag}` must look like FIELD=VALUE,FIELD=VALUE; got {text!r}.")
        try:
            fields[key] = json.loads(value)
        except json.JSONDecodeError:
            fields[key] = value
    return fields


def parse_candidate(text: str) -> tuple[str, dict]:
    """'NAME:FIELD=VALUE,...' -> (name, fields)."""
    name, sep, rest = text.partition(":")
    if not name:
        raise ValueError(f"`--candidate` must look like NAME:FIELD=VALUE,...; got {text!r}.")
    return name, parse_fields(rest if sep else "", "--candidate")


def time_steps(model: tfpvae.VAE, x: np.ndarray, batch_size: int, steps: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) per step of `steps` training steps (after the graph is built)."""
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(x[: steps * batch_size], batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="binarized_mnist")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--base", default=BASE, help=f"VAEConfig fields of the base model (default {BASE})")
    p.add_argument("--candidate", action="append", required=True, help="NAME:FIELD=VALUE,... (repeat)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=100, help="steps timed per round (default 100)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every candidate (default 3)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: TensorFlow's choice)")
    args = p.parse_args(argv)
    try:
        base = parse_fields(args.base, "--base")
        candidates = [parse_candidate(c) for c in args.candidate]
    except ValueError as err:
        p.error(str(err))
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    (x, _), _ = tfpvae.datasets.load(args.dataset, args.data_dir)
    x = x[: args.steps * args.batch_size]
    if len(x) < args.steps * args.batch_size:
        p.error(f"--steps {args.steps} x --batch-size {args.batch_size} needs more than the {len(x)} training images")
    models = {}
    for name, fields in candidates:
        config = VAEConfig(input_shape=x.shape[1:], **{**base, **fields})
        model = tfpvae.VAE(config)
        model.compile()
        model.fit(x[: 5 * args.batch_size], batch_size=args.batch_size, epochs=1, verbose=0)  # builds the graph
        models[name] = model
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            times[name].append(time_steps(model, x, args.batch_size, args.steps))
    first = [statistics.median(t[i] for t in times[candidates[0][0]]) for i in (0, 1)]
    print("| candidate | fields | wall ms/step | ratio | CPU ms/step | ratio |\n|---|---|---:|---:|---:|---:|")
    for name, fields in candidates:
        wall, cpu = (statistics.median(t[i] for t in times[name]) for i in (0, 1))
        row = {
            "candidate": name,
            "fields": fields,
            "ms_per_step": round(1000 * wall, 2),
            "ratio": round(wall / first[0], 3),
            "cpu_ms_per_step": round(1000 * cpu, 2),
            "cpu_ratio": round(cpu / first[1], 3),
            "rounds_ms": [round(1000 * t[0], 2) for t in times[name]],
            "rounds_cpu_ms": [round(1000 * t[1], 2) for t in times[name]],
        }
        ratios = f"{row['ratio']:.2f} | {1000 * cpu:.1f} | {row['cpu_ratio']:.2f}"
        print(f"| {name} | {fields} | {1000 * wall:.1f} | {ratios} |")
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
