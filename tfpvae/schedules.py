"""Training schedules as Keras callbacks: KL warm-up, learning-rate decay, a time budget.

`KLWarmup` and `LearningRateDecay` set their value at the start of each epoch from the
epoch index alone (and the run's total epochs), never from a counter of epochs seen. A run
resumed at epoch e (`tfpvae.train(..., resume=True)`, which passes `initial_epoch=e` to
`fit`) therefore gets exactly the values the uninterrupted run would have had.
`TimeBudget` stops training after a number of seconds and decays the learning rate with
the fraction of them spent, at every step: the schedule of a run that is to end at a time
rather than after a number of epochs. The pure functions `kl_warmup_weight`,
`learning_rate_at` and `decayed_rate` give the values without a model.
"""

from __future__ import annotations

import math
import time

from tfpvae._keras import tfk
from tfpvae._validation import check_choice, check_float, check_int
from tfpvae.config import DEFAULT_MIN_LR_FRACTION, LR_SCHEDULES, UNLIMITED_EPOCHS

__all__ = [
    "DEFAULT_MIN_LR_FRACTION",
    "UNLIMITED_EPOCHS",
    "BudgetProgress",
    "KLWarmup",
    "LR_SCHEDULES",
    "LearningRateDecay",
    "TimeBudget",
    "decayed_rate",
    "kl_warmup_weight",
    "learning_rate_at",
]


def kl_warmup_weight(epoch: int, warmup_epochs: int, beta: float = 1.0) -> float:
    """The KL weight of a linear warm-up during 0-based `epoch`.

    Epoch e < warmup_epochs gets beta * (e + 1) / warmup_epochs, so the first epoch already
    has some KL (a weight of exactly 0 lets the posterior drift arbitrarily far from the
    prior) and epoch warmup_epochs - 1 reaches beta; later epochs keep beta.

    Args:
      epoch: 0-based epoch index, >= 0.
      warmup_epochs: length of the warm-up, >= 0; 0 means no warm-up (always beta).
      beta: the final KL weight, >= 0. 1.0: the ELBO.

    Returns:
      The weight, a float in [0, beta].

    Examples:
      >>> tuple(kl_warmup_weight(e, 4) for e in range(6))
      (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
    """
    epoch = check_int(epoch, "epoch", minimum=0)
    warmup_epochs = check_int(warmup_epochs, "warmup_epochs", minimum=0)
    beta = check_float(beta, "beta", minimum=0.0)
    if epoch >= warmup_epochs:
        return beta
    return beta * (epoch + 1) / warmup_epochs


def learning_rate_at(
    epoch: int,
    epochs: int,
    learning_rate: float,
    schedule: str = "constant",
    min_lr_fraction: float = DEFAULT_MIN_LR_FRACTION,
) -> float:
    """The learning rate of 0-based `epoch` in a run of `epochs` epochs.

    With `floor = min_lr_fraction * learning_rate` and `t = epoch / (epochs - 1)` (0 at the
    first epoch, 1 at the last; t = 0 throughout a one-epoch run):

    * "constant": learning_rate at every epoch.
    * "linear": `floor + (learning_rate - floor) * (1 - t)`, a straight line from
      learning_rate at the first epoch to exactly the floor at the last.
    * "cosine": `floor + (learning_rate - floor) * (1 + cos(pi * t)) / 2`, a half cosine
      from learning_rate at the first epoch to exactly the floor at the last.
    * "exponential": `learning_rate * min_lr_fraction**t`, a geometric decay by the same
      factor each epoch, from learning_rate to exactly the floor at the last epoch.

    Epochs past the last (a resumed run that trains longer) keep the floor.

    Args:
      epoch: 0-based epoch index, >= 0.
      epochs: total epochs of the run, >= 1.
      learning_rate: the initial learning rate, > 0.
      schedule: one of `LR_SCHEDULES`.
      min_lr_fraction: the floor as a fraction of learning_rate, in (0, 1]. Default 0.05.

    Returns:
      The learning rate, a float in [floor, learning_rate].

    Examples:
      >>> first = learning_rate_at(0, 10, 2e-3, "cosine")
      >>> last = learning_rate_at(9, 10, 2e-3, "cosine")
      >>> first, last
      (0.002, 0.0001)
    """
    epoch = check_int(epoch, "epoch", minimum=0)
    epochs = check_int(epochs, "epochs")
    if epochs == 1:
        t = 0.0  # a one-epoch run never decays
    else:
        t = 1.0 if epoch >= epochs - 1 else epoch / (epochs - 1)
    return decayed_rate(t, learning_rate, schedule, min_lr_fraction)


def decayed_rate(
    progress: float,
    learning_rate: float,
    schedule: str = "constant",
    min_lr_fraction: float = DEFAULT_MIN_LR_FRACTION,
) -> float:
    """The learning rate of `schedule` when `progress` of the run is done (see `learning_rate_at`).

    Args:
      progress: the fraction t of the run done, in [0, 1]; values above 1 count as 1.
      learning_rate: the initial learning rate, > 0.
      schedule: one of `LR_SCHEDULES`.
      min_lr_fraction: the floor as a fraction of learning_rate, in (0, 1]. Default 0.05.

    Returns:
      The learning rate: learning_rate at t = 0, exactly the floor at t = 1 (for the
      decaying schedules).

    Examples:
      >>> decayed_rate(0.5, 2e-3, "linear", 0.05)  # halfway from 2e-3 to 1e-4
      0.00105
    """
    progress = min(check_float(progress, "progress", minimum=0.0), 1.0)
    learning_rate = check_float(learning_rate, "learning_rate", minimum=0.0, min_inclusive=False)
    schedule = check_choice(schedule, "schedule", LR_SCHEDULES)
    min_lr_fraction = check_float(min_lr_fraction, "min_lr_fraction", minimum=0.0, maximum=1.0, min_inclusive=False)
    if schedule == "constant" or progress == 0.0:
        return learning_rate  # exactly, with no rounding error
    floor = min_lr_fraction * learning_rate
    if progress == 1.0:
        return floor  # exactly, with no rounding error
    if schedule == "linear":
        return floor + (learning_rate - floor) * (1.0 - progress)
    if schedule == "cosine":
        return floor + (learning_rate - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return learning_rate * min_lr_fraction**progress


class KLWarmup(tfk.callbacks.Callback):
    """Raises a VAE's `kl_weight` linearly from near 0 to beta over the first epochs.

    At the start of each epoch e it assigns `kl_warmup_weight(e, epochs, beta)` to
    `model.kl_weight`: beta / epochs in the first epoch, beta from epoch `epochs` on.
    Early epochs then fit the decoder before the KL pulls the posteriors to the prior,
    which leaves fewer inactive latent units. The reported `elbo` metric is the true
    ELBO throughout; `loss` uses the current weight (see `VAEConfig.train_samples` for
    the weighted IWAE bound). When training ends the weight is beta, even after a run
    shorter than the warm-up.

    Args:
      epochs: warm-up length in epochs, >= 0 (0: the weight is beta from the start).
      beta: the final weight, >= 0. None: the model's `config.beta`.

    Examples:
      >>> model.fit(x, epochs=20, callbacks=[KLWarmup(10)])  # doctest: +SKIP
    """

    def __init__(self, epochs: int, beta: float | None = None) -> None:
        super().__init__()
        self.epochs = check_int(epochs, "epochs", minimum=0)
        self.beta = None if beta is None else check_float(beta, "beta", minimum=0.0)

    def weight(self, epoch: int) -> float:
        """The KL weight this callback sets for 0-based `epoch` (needs the model for beta=None)."""
        beta = self.model.config.beta if self.beta is None else self.beta
        return kl_warmup_weight(epoch, self.epochs, beta)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.kl_weight.assign(self.weight(epoch))

    def on_train_end(self, logs=None):
        # A run shorter than the warm-up must not leave (and save) a model whose loss and
        # `evaluate` use a partial weight; a resumed run sets its epoch's weight again.
        self.model.kl_weight.assign(self.weight(self.epochs))


class LearningRateDecay(tfk.callbacks.Callback):
    """Sets the optimizer's learning rate at the start of each epoch (see `learning_rate_at`).

    Args:
      schedule: "constant", "linear", "cosine" or "exponential".
      epochs: total epochs of the run, >= 1: the decaying schedules reach their floor at
        epoch `epochs` (1-based). Pass the same total when resuming, so the curve is the same.
      learning_rate: the initial learning rate. None: the model's
        `config.learning_rate` (not the optimizer's current rate, which a previous run of
        this schedule has already lowered).
      min_lr_fraction: the floor as a fraction of the initial rate. Default 0.05 (1/20).

    Raises:
      ValueError: at the first epoch, if the optimizer's learning rate is itself a
        Keras `LearningRateSchedule` (two schedules would fight over it).
    """

    def __init__(
        self,
        schedule: str,
        epochs: int,
        learning_rate: float | None = None,
        min_lr_fraction: float = DEFAULT_MIN_LR_FRACTION,
    ) -> None:
        super().__init__()
        self.schedule = check_choice(schedule, "schedule", LR_SCHEDULES)
        self.epochs = check_int(epochs, "epochs")
        if learning_rate is not None:
            learning_rate = check_float(learning_rate, "learning_rate", minimum=0.0, min_inclusive=False)
        self.learning_rate = learning_rate
        self.min_lr_fraction = check_float(
            min_lr_fraction, "min_lr_fraction", minimum=0.0, maximum=1.0, min_inclusive=False
        )

    def rate(self, epoch: int) -> float:
        """The learning rate this callback sets for 0-based `epoch` (needs the model for learning_rate=None)."""
        initial = self.model.config.learning_rate if self.learning_rate is None else self.learning_rate
        return learning_rate_at(epoch, self.epochs, initial, self.schedule, self.min_lr_fraction)

    def on_epoch_begin(self, epoch, logs=None):
        try:
            self.model.optimizer.learning_rate = self.rate(epoch)
        except TypeError:  # tf_keras refuses to set the rate of an optimizer built with a schedule
            raise ValueError(
                "The optimizer's learning rate is already a Keras LearningRateSchedule; compile with a plain "
                "learning rate to use `lr_schedule`."
            ) from None


class TimeBudget(tfk.callbacks.Callback):
    """Stops training after `seconds` of it, decaying the learning rate with the time spent.

    Each `fit` runs the clock from `spent`, starting at its first batch (tracing,
    validation and checkpoints between epochs count: the budget is wall-clock time; time
    between two `fit` calls does not), and training stops at the end of the first batch
    that ends past the budget. Before every batch the learning rate is set to
    `decayed_rate(spent / seconds, ...)`: with "linear", a straight line from the initial
    rate to the floor at the end of the budget. The budget alone drives the rate: if
    `fit`'s epochs end training first, the rate has not reached its floor. A rate
    that decays to the end of the budget (Li et al., "Budgeted training", ICLR 2020)
    reached a 2.4-2.7 nats lower test NLL than a constant rate in 5 minutes of training,
    linear and cosine alike (Benchmarks page, "Training to a time budget").

    Args:
      seconds: the budget in seconds, > 0.
      schedule: one of `LR_SCHEDULES`, over the budget. Default "constant": the
        optimizer's rate is left alone.
      learning_rate: the initial learning rate. None: the model's `config.learning_rate`.
      min_lr_fraction: the floor as a fraction of the initial rate, in (0, 1]. Default 0.05.
      spent: seconds already spent of the budget (a resumed run's). Default 0. Keras
        checks for a stop only after a batch, so `fit` with a budget already spent still
        trains one batch; `tfpvae.train` trains none.

    Attributes:
      spent: seconds of the budget spent so far, updated at the end of every batch (and
        by `tick`).

    Raises:
      ValueError: at the first batch, if a decaying schedule meets an optimizer whose
        learning rate is itself a Keras `LearningRateSchedule`.

    Examples:
      >>> model.fit(x, epochs=1000, callbacks=[TimeBudget(300, "linear")])  # doctest: +SKIP
    """

    def __init__(
        self,
        seconds: float,
        schedule: str = "constant",
        learning_rate: float | None = None,
        min_lr_fraction: float = DEFAULT_MIN_LR_FRACTION,
        spent: float = 0.0,
    ) -> None:
        super().__init__()
        self.seconds = check_float(seconds, "seconds", minimum=0.0, min_inclusive=False)
        self.schedule = check_choice(schedule, "schedule", LR_SCHEDULES)
        if learning_rate is not None:
            learning_rate = check_float(learning_rate, "learning_rate", minimum=0.0, min_inclusive=False)
        self.learning_rate = learning_rate
        self.min_lr_fraction = check_float(
            min_lr_fraction, "min_lr_fraction", minimum=0.0, maximum=1.0, min_inclusive=False
        )
        self.spent = check_float(spent, "spent", minimum=0.0)
        self._origin: float | None = None  # perf_counter() at which `spent` was 0

    @property
    def exhausted(self) -> bool:
        """True once the budget is spent."""
        return self.spent >= self.seconds

    def tick(self) -> float:
        """Brings `spent` up to now during a `fit` (e.g. before a checkpoint records it); returns it."""
        if self._origin is not None:
            self.spent = time.perf_counter() - self._origin
        return self.spent

    def rate(self, spent: float) -> float:
        """The learning rate after `spent` seconds (needs the model for learning_rate=None)."""
        initial = self.model.config.learning_rate if self.learning_rate is None else self.learning_rate
        return decayed_rate(spent / self.seconds, initial, self.schedule, self.min_lr_fraction)

    def on_train_begin(self, logs=None):
        self._origin = None  # a new `fit` continues from `spent`, not from the last one's clock

    def on_train_batch_begin(self, batch, logs=None):
        if self._origin is None:
            self._origin = time.perf_counter() - self.spent
        if self.schedule == "constant":
            return
        try:
            self.model.optimizer.learning_rate = self.rate(time.perf_counter() - self._origin)
        except TypeError:  # tf_keras refuses to set the rate of an optimizer built with a schedule
            raise ValueError(
                "The optimizer's learning rate is already a Keras LearningRateSchedule; compile with a plain "
                "learning rate to decay it over a time budget (`lr_schedule` with `time_budget`)."
            ) from None

    def on_train_batch_end(self, batch, logs=None):
        self.tick()
        if self.exhausted:
            self.model.stop_training = True


class BudgetProgress(tfk.callbacks.ProgbarLogger):
    """Keras' progress bar for a run that a `TimeBudget` ends: each epoch's line says the time spent.

    "Epoch 3/10: 41 s of 300 s spent", or "Epoch 3: 41 s of 300 s spent" when the epochs
    are `UNLIMITED_EPOCHS` (the budget alone ends the run) instead of Keras' "Epoch 3/1000000".
    Silent with `fit(verbose=0)`, like Keras' own bar, which this one replaces.

    Args:
      budget: the run's `TimeBudget`.
    """

    def __init__(self, budget: TimeBudget) -> None:
        super().__init__(count_mode="steps")
        self.budget = budget

    def on_epoch_begin(self, epoch, logs=None):
        epochs, self.epochs = self.epochs, 1  # Keras prints its own "Epoch N/M" line only for M > 1
        try:
            super().on_epoch_begin(epoch, logs)
        finally:
            self.epochs = epochs
        if self.verbose:
            total = "" if epochs >= UNLIMITED_EPOCHS else f"/{epochs}"
            spent, seconds = self.budget.tick(), self.budget.seconds  # validation and checkpoints included
            print(f"Epoch {epoch + 1}{total}: {spent:.0f} s of {seconds:.0f} s spent", flush=True)
