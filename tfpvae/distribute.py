"""Distribution strategies for training on several devices or machines with TensorFlow's own engine.

Build and compile the model inside `strategy.scope()`; `VAE.train_step` scales the loss by
the number of replicas, so each image's NLL and KL count once in the global-batch mean
however many replicas there are. For several machines, set `TF_CONFIG` on each worker (see
`docs/` and the TensorFlow multi-worker guide); worker 0 (or the "chief") is the one that
writes checkpoints and the model folder.

`file_dataset` streams training images from files (`tfpvae.streaming`) with bounded
memory; under a multi-worker strategy each worker reads its own share of the files.

Examples:
  >>> strategy = make_strategy("mirrored")
  >>> with strategy.scope():
  ...     model = tfpvae.VAE(latent_dim=16)
  ...     model.compile()
  >>> model.fit(x_train, batch_size=256, epochs=5)   # 256 = the global batch
"""

from __future__ import annotations

import json
import os
from typing import Any

from tfpvae._keras import tf
from tfpvae._validation import check_choice, check_int
from tfpvae.config import STRATEGIES


def make_strategy(name: str = "mirrored", devices: list[str] | None = None) -> Any:
    """Returns a `tf.distribute` strategy by name.

    Args:
      name: "default" (no distribution), "mirrored" (all local devices, or `devices`) or
        "multiworker" (MultiWorkerMirroredStrategy configured by the TF_CONFIG environment
        variable; every worker runs the same program).
      devices: device names for "mirrored", e.g. ["/cpu:0", "/cpu:1"]. None: all.

    Raises:
      ValueError: unknown name, or "multiworker" without a valid TF_CONFIG.
    """
    check_choice(name, "strategy", STRATEGIES)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    config = os.environ.get("TF_CONFIG")
    try:
        cluster = json.loads(config)["cluster"] if config else None
    except (json.JSONDecodeError, KeyError, TypeError):
        cluster = None
    if not cluster:
        raise ValueError(
            "`strategy='multiworker'` needs the TF_CONFIG environment variable, e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}.'
        )
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy: Any | None = None) -> bool:
    """True on the worker that should write files: the chief, or worker 0, or a single machine."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)


def num_workers(strategy: Any) -> int:
    """Worker machines (chief included) of a multi-worker strategy; 1 for any other."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, len(spec.get("chief", [])) + len(spec.get("worker", [])))


def file_dataset(
    source: Any,
    *,
    global_batch_size: int,
    strategy: Any = None,
    image_shape: tuple[int, int, int] | None = None,
    shuffle_buffer: int = 10_000,
    seed: int | None = None,
) -> tuple[Any, int | None, tuple[int, int, int]]:
    """Training batches streamed from image files, sharded by file across workers.

    Memory holds the shuffle buffer and a few batches, whatever the number of images. With
    one worker the dataset is one shuffled pass over the files per epoch. With several
    (a `MultiWorkerMirroredStrategy`), worker i of n reads files i, i + n, ... and the
    dataset repeats: every worker must take the same number of steps, so an epoch is
    `steps_per_epoch` = min over workers of (its images // its batch), and a worker with
    more images carries the rest into the next epoch rather than dropping them.

    Args:
      source: anything `tfpvae.streaming.list_files` takes (a file, folder or glob of
        PNG/JPEG, TFRecord or .npy/.npz files).
      global_batch_size: images per step over all replicas, int >= 1.
      strategy: a `tf.distribute` strategy. None: the current one.
      image_shape: (height, width, channels). None: the first image's.
      shuffle_buffer: images in the shuffle buffer, int >= 1.
      seed: shuffle seed.

    Returns:
      (dataset, steps_per_epoch, image_shape): a `tf.data.Dataset` of float32 image
      batches (n, H, W, C) and None with one worker, else a distributed dataset and the
      steps per epoch to pass to `fit`.

    Raises:
      ValueError: fewer files than workers, or a worker whose files hold fewer images than
        one batch.
    """
    from tfpvae import streaming

    global_batch_size = check_int(global_batch_size, "global_batch_size")
    shuffle_buffer = check_int(shuffle_buffer, "shuffle_buffer")
    strategy = strategy or tf.distribute.get_strategy()
    files = streaming.list_files(source)
    first = next(streaming.iter_batches(files=files, batch_size=1, on_error=lambda err: None), None)
    if first is None:
        raise ValueError(f"`source` {source!r} holds no readable image.")
    shape = tuple(first.images.shape[1:]) if image_shape is None else tuple(image_shape)

    def images(shard):
        ds = streaming.stream(source, files=shard, image_shape=shape).map(lambda e: e["image"])
        return ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    workers = num_workers(strategy)
    if workers == 1:
        return images(files).batch(global_batch_size).prefetch(tf.data.AUTOTUNE), None, shape
    if len(files) < workers:
        raise ValueError(
            f"`source` {source!r} has {len(files)} files; sharding by file over {workers} workers needs at least "
            f"{workers} (split the data into more files, e.g. TFRecord shards)."
        )
    per_worker = max(1, global_batch_size // workers)
    counts = [sum(streaming.count_records(f) for f in files[i::workers]) for i in range(workers)]
    steps = min(counts) // per_worker
    if steps == 0:
        raise ValueError(
            f"Worker {counts.index(min(counts))} of {workers} gets {min(counts)} images from its files, fewer than "
            f"one batch of {per_worker}; use a smaller --batch-size or more evenly sized files."
        )

    def dataset_fn(context):
        shard = files[context.input_pipeline_id :: context.num_input_pipelines]
        batch = context.get_per_replica_batch_size(global_batch_size)
        return images(shard).repeat().batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(dataset_fn), steps, shape
