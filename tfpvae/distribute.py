"""Distribution strategies for training on several devices or machines with TensorFlow's own engine.

Build and compile the model inside `strategy.scope()`; `VAE.train_step` scales the loss by
the number of replicas, so each image's NLL and KL count once in the global-batch mean
however many replicas there are. For several machines, set `TF_CONFIG` on each worker (see
`docs/` and the TensorFlow multi-worker guide); worker 0 (or the "chief") is the one that
writes checkpoints and the model folder.

Example:
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
from tfpvae._validation import check_choice

STRATEGIES = ("default", "mirrored", "multiworker")


def make_strategy(name: str = "mirrored", devices: list[str] | None = None) -> Any:
    """Returns a `tf.distribute` strategy by name.

    Args:
      name: "default" (no distribution), "mirrored" (all local devices, or `devices`) or
        "multiworker" (MultiWorkerMirroredStrategy configured by the TF_CONFIG environment
        variable; every worker runs the same program).
      devices: device names for "mirrored", e.g. ["/cpu:0", "/cpu:1"]. Default None: all.

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
