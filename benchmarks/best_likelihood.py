"""Best-likelihood recipe: train a tfpvae model with checkpoints, then score the whole test set.

The Python equivalent of the recipes in docs/benchmarks.md, for dynamically binarised MNIST

    tfpvae train --dataset mnist --data-dir ../shared/data --architecture mlp --latent-dim 32 \\
        --hidden-units 384 --prior mixture --num-components 50 --train-samples 4 \\
        --kl-warmup-epochs 20 --lr-schedule cosine --learning-rate 1e-3 --batch-size 128 \\
        --epochs 260 --seed 0 --validation-images 0 --no-progress --out runs/best
    tfpvae evaluate --model runs/best --dataset mnist --data-dir ../shared/data \\
        --num-samples 5000 --binarize-seed 0

and for binarized_mnist the same with `--hidden-units 256 --num-components 10 --epochs 260
--dropout 0.05 --early-stopping 20` (it has a valid split; a bigger model only overfits sooner) and neither
`--binarize-seed` nor `--validation-images 0` (early stopping validates on that split). This script adds
a wall-clock cap (`--max-minutes`) that ends training after the epoch that crosses it,
`--threads` to pin a run to one core, and `--resume` to continue the run in `--out` from its
last checkpoint (`--epochs` is then the new total; the cosine rate spans it). Every option
defaults to the old 2026-11-22 recipe (ELBO, normal prior, constant rate, 256 units): pass
the recipe's flags. Training goes through `tfpvae.training.train` (atomic per-epoch
checkpoints in the run folder, resumable with `tfpvae train --resume`); the score is
`LikelihoodEstimator.log_prob` as in `tfpvae evaluate`: IWAE (`--num-samples`, default
k=1000), seed 0, mean over the test images with its standard error.

    python benchmarks/best_likelihood.py --dataset mnist --out runs/best --threads 2 \\
        --max-minutes 118 --prior mixture --num-components 50 --hidden-units 384 \\
        --train-samples 4 --kl-warmup-epochs 20 --lr-schedule cosine --batch-size 128 --epochs 260
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

import tfpvae
from tfpvae._arguments import add_config_flags, config_from_args
from tfpvae._keras import tf, tfk
from tfpvae.config import VAEConfig
from tfpvae.likelihood import LikelihoodEstimator
from tfpvae.schedules import LR_SCHEDULES
from tfpvae.training import train


class _WallClock(tfk.callbacks.Callback):
    def __init__(self, minutes: float) -> None:
        super().__init__()
        self.deadline = time.time() + 60 * minutes

    def on_epoch_end(self, epoch, logs=None):
        if time.time() >= self.deadline:
            self.model.stop_training = True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist", choices=("mnist", "binarized_mnist"))
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--out", required=True)
    # The model flags of `tfpvae train`, from VAEConfig's fields; this benchmark's own defaults.
    add_config_flags(p, VAEConfig(latent_dim=32, learning_rate=1e-3))
    p.add_argument("--kl-warmup-epochs", type=int, default=0)
    p.add_argument("--lr-schedule", default="constant", choices=LR_SCHEDULES)
    p.add_argument(
        "--early-stopping",
        type=int,
        metavar="PATIENCE",
        help="binarized_mnist: monitor the loss on the valid split and keep the best weights",
    )
    p.add_argument("--threads", type=int, help="intra-op threads (default: TensorFlow's choice)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--max-minutes", type=float, default=1e9)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument(
        "--test-images",
        type=int,
        help="score only the first N test images (pilot runs; in split order, and binarized_mnist's test split "
        "is sorted by digit, so compare such pilots with each other, not with the whole split)",
    )
    p.add_argument("--train-images", type=int, help="train on the first N training images (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint; --epochs is the total, the other flags must match",
    )
    args = p.parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    (x_train, _), (x_test, _) = tfpvae.datasets.load(args.dataset, args.data_dir)
    x_train, x_test = x_train[: args.train_images], x_test[: args.test_images]
    model = tfpvae.VAE(config_from_args(args, input_shape=x_train.shape[1:], seed=args.seed))
    validation = None
    if args.early_stopping:
        if args.dataset != "binarized_mnist":
            p.error("--early-stopping needs the valid split of binarized_mnist")
        validation = tfpvae.datasets.load_split(args.dataset, "valid", args.data_dir)[0]
    t0 = time.time()
    result = train(
        model,
        x_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=validation,
        run_dir=args.out,
        seed=args.seed,
        verbose=2,
        callbacks=[_WallClock(args.max_minutes)],
        kl_warmup_epochs=args.kl_warmup_epochs,
        lr_schedule=args.lr_schedule,
        early_stopping=args.early_stopping,
        resume=args.resume,
    )
    train_s = time.time() - t0  # train saved the model (the best epoch's weights) in args.out
    t0 = time.time()
    binarize_seed = 0 if args.dataset == "mnist" else None
    est = LikelihoodEstimator.from_model(model)
    log_p, mc_se = est.log_prob(
        x_test, num_samples=args.num_samples, seed=0, binarize_seed=binarize_seed, return_stderr=True, progress=False
    )
    n = len(log_p)
    summary = {
        "dataset": args.dataset,
        "recipe": {k: v for k, v in vars(args).items() if k not in ("data_dir", "out")},
        "epochs_completed": result.epochs_completed,
        "best_epoch": result.best_epoch,
        "train_seconds": round(train_s, 1),
        "final_train_loss": model.training_history.get("loss", [math.nan])[-1],
        "num_images": n,
        "num_samples": args.num_samples,
        "iwae_nll": float(-log_p.mean()),
        "iwae_nll_stderr": float(log_p.std(ddof=1) / np.sqrt(n)),
        "iwae_nll_mc_stderr": float(np.sqrt(np.sum(mc_se**2)) / n),
        "score_seconds": round(time.time() - t0, 1),
        "binarize_seed": binarize_seed,
    }
    (Path(args.out) / "best_likelihood.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
