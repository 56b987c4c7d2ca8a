"""Validation (and training) data: scikit-learn's bundled digits, one fixed split.

The digits images (1,797 8x8 greyscale images of 10 classes) ship inside scikit-learn, so
the demo works offline. Pixel values 0..16 are scaled to [0, 1] and shaped (N, 1, 8, 8).
They are read from scikit-learn's data file as ``load_digits`` reads it, and split by the
positions ``train_test_split(stratify=y, test_size=360, random_state=0)`` gives, stored in
``assets/digits_split.npz`` (:func:`write_digits_split`): importing scikit-learn took 4 s of
every CLI command and of the app's first page, for 60 kB of numbers.

A decision made on data (a suggested plan, a Pareto front) is judged optimistically on the
images it was chosen on. :func:`split_for_decisions` cuts a validation set into a
*calibration* part, where choices are made, and a *held-out* part, where they are reported:
stratified by label, and by a rule that depends on nothing but the labels, the fraction and
the seed (no random generator whose stream could change between library versions), so the
same file gives the same split on every run and platform. :func:`stratified_subset` picks a
fixed number of images by the same kind of rule: a quick first answer on a large set.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from explorer.errors import DataError

DIGITS_VALIDATION_SIZE = 360
DIGITS_SPLIT_SEED = 0
DIGITS_CSV = ("datasets", "data", "digits.csv.gz")  # inside the scikit-learn package
DIGITS_SPLIT = Path(__file__).resolve().parents[1] / "assets" / "digits_split.npz"
DECISION_FRACTION = 0.5  # of each class, for the calibration part


@dataclass(frozen=True)
class ValidationSet:
    """Inputs ``x`` (N, *input_shape) float32 and integer labels ``y`` (N,) in [0, classes).

    ``y`` None: data without labels (``labelled`` False): no accuracy or loss, but
    fidelity to the dense model (:func:`~explorer.metrics.fidelity`); stratified choices
    then treat every image as one class (evenly spread over file order). ``indices`` (N,)
    int64: for a part of another set (:meth:`subset`), the positions of these samples in
    it; None for a set as loaded.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    num_classes: int
    name: str = "validation"
    indices: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.y is not None and self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"{self.name}: x has {self.x.shape[0]} samples but y has {self.y.shape[0]}; "
                "they must have the same length."
            )
        if self.x.shape[0] == 0:
            raise DataError(f"{self.name}: the data set is empty; it needs at least one sample.")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def labelled(self) -> bool:
        return self.y is not None

    def subset(self, indices: torch.Tensor, name: str) -> ValidationSet:
        """The samples at ``indices`` (in that order), remembering where they came from."""
        indices = torch.as_tensor(indices, dtype=torch.int64)
        y = None if self.y is None else self.y[indices]
        return ValidationSet(self.x[indices], y, self.num_classes, name, indices)

    def strata(self) -> np.ndarray:
        """The labels that stratified choices keep in proportion (N,): ``y``, or one class
        for data without labels."""
        return np.zeros(len(self), dtype=np.int64) if self.y is None else self.y.numpy()


@dataclass(frozen=True)
class DecisionSplit:
    """A validation set cut in two (see :func:`split_for_decisions`): choose on
    ``calibration``, report on ``held_out``; each part's ``indices`` are positions in the
    source set (``source`` names it, ``samples`` is its size)."""

    source: str
    samples: int
    calibration: ValidationSet
    held_out: ValidationSet
    fraction: float
    seed: int | None

    def rule(self, noun: str = "images") -> str:
        """Which samples of each class (``noun``: images, or a text model's sentences) are
        calibration samples, in words."""
        if self.seed is not None:
            return f"{self.fraction:.0%} of each class, picked by seed {self.seed}"
        if self.fraction == 0.5:
            return f"the 1st, 3rd, 5th, ... {noun[:-1]} of each class, in file order"
        return f"{self.fraction:.0%} of each class, spread evenly in file order"

    def describe(self, noun: str = "images") -> str:
        """One line for a page: which samples (``noun``) choose and which report."""
        return (f"Chosen on {len(self.calibration)} calibration {noun} of the {self.samples} "
                f"{self.source} {noun} ({self.rule(noun)}); reported on the other "
                f"{len(self.held_out)}, held out from every choice.")

    def to_dict(self) -> dict:
        return {"source": self.source, "samples": self.samples, "fraction": self.fraction,
                "seed": self.seed, "rule": self.rule(),
                "calibration_indices": self.calibration.indices.tolist(),
                "held_out_indices": self.held_out.indices.tolist()}


def split_for_decisions(
    data: ValidationSet, fraction: float = DECISION_FRACTION, seed: int | None = None
) -> DecisionSplit:
    """``data`` cut into a calibration part (about ``fraction`` of each class) and the rest.

    Within each class the images are taken in file order (``seed`` None) or in an order
    fixed by ``seed`` (a 64-bit hash of seed and position); of a class of n images, the
    calibration part gets k = round(n * fraction), at least one and at most n - 1 when
    n >= 2, spread evenly over that order (for 0.5: the 1st, 3rd, 5th, ...). Both parts keep
    file order. Deterministic: the same labels, fraction and seed give the same split on
    every run and platform.

    Raises:
        DataError: ``fraction`` is not strictly between 0 and 1, or one part would be empty
            (every class has a single image).
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0.0 < fraction < 1.0:
        raise DataError(f"The calibration fraction must be between 0 and 1; got {fraction!r}.")
    y = data.strata()
    order = np.arange(len(y)) if seed is None else np.lexsort((np.arange(len(y)),
                                                             _hashes(seed, len(y))))
    chosen = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        members = order[y[order] == label]
        chosen[members[_spread(len(members), fraction)]] = True
    calibration, held_out = np.flatnonzero(chosen), np.flatnonzero(~chosen)
    if not len(calibration) or not len(held_out):
        raise DataError(f"{data.name}: {len(data)} image(s) cannot be split into a "
                        "calibration and a held-out part; a decision needs two images of at "
                        "least one class.")
    return DecisionSplit(data.name, len(data),
                         data.subset(torch.from_numpy(calibration), f"{data.name} calibration"),
                         data.subset(torch.from_numpy(held_out), f"{data.name} held-out"),
                         float(fraction), seed)


def stratified_subset(data: ValidationSet, samples: int) -> ValidationSet:
    """``samples`` images of ``data`` in file order, each class in proportion to its share.

    Class c of n_c images gets its quota ``samples * n_c / N`` rounded down, and the images
    still owed go to the largest remainders (ties: the smaller label); within a class its
    images are taken evenly spread over file order, the first one included. The same
    labels and ``samples`` give the same subset on every run. ``samples`` >= N: all of it.

    Raises:
        DataError: ``samples`` is not a positive whole number.
    """
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise DataError(f"The number of samples must be a positive whole number; got "
                        f"{samples!r}.")
    if samples >= len(data):
        return data
    y = data.strata()
    labels, counts = np.unique(y, return_counts=True)
    quotas = counts * samples // len(y)
    owed = samples - int(quotas.sum())
    remainders = counts * samples - quotas * len(y)
    quotas[np.lexsort((labels, -remainders))[:owed]] += 1
    chosen = np.zeros(len(y), dtype=bool)
    for label, k in zip(labels, quotas, strict=True):
        members = np.flatnonzero(y == label)
        chosen[members[_evenly(len(members), int(k))]] = True
    return data.subset(torch.from_numpy(np.flatnonzero(chosen)),
                       f"{data.name} ({samples} of {len(y)})")


def _spread(n: int, fraction: float) -> np.ndarray:
    """Which of n items (a boolean mask) the calibration part takes: k = round(n * fraction)
    of them, at least one and at most n - 1 when n >= 2, evenly (:func:`_evenly`)."""
    k = math.floor(n * fraction + 0.5)
    if n >= 2:
        k = min(max(k, 1), n - 1)
    return _evenly(n, k)


def _evenly(n: int, k: int) -> np.ndarray:
    """k of n items (a boolean mask), evenly spread, the first one included (position i is
    taken when floor((i k + n - k) / n) steps up)."""
    i = np.arange(n + 1)
    steps = (i * k + n - k) // n
    return steps[1:] > steps[:-1]


def _hashes(seed: int, n: int) -> np.ndarray:
    """splitmix64 of (seed, position) for positions 0..n-1: a platform-independent order."""
    z = np.arange(n, dtype=np.uint64) + np.array([seed % 2**64], dtype=np.uint64) * \
        np.array([0x9E3779B97F4A7C15], dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.array([0xBF58476D1CE4E5B9], dtype=np.uint64)
    z = (z ^ (z >> np.uint64(27))) * np.array([0x94D049BB133111EB], dtype=np.uint64)
    return z ^ (z >> np.uint64(31))


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``load_digits`` returns them (images (1797, 8, 8) of 0..16,
    targets), read from its data file without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DataError("The digits demo data ships with scikit-learn, which is not installed: "
                        "pip install scikit-learn.")
    with gzip.open(Path(spec.origin).parent.joinpath(*DIGITS_CSV)) as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


@lru_cache(maxsize=1)
def _digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    images, target = _digits()
    x = (images.astype(np.float32) / 16.0)[:, None, :, :]
    with np.load(DIGITS_SPLIT) as split:
        train, val = split["train"], split["val"]
    return x[train], target[train], x[val], target[val]


def write_digits_split(path: Path = DIGITS_SPLIT) -> None:
    """Store the positions of scikit-learn's stratified split of the digits (the one split
    every demo is trained and judged on) for :func:`_digits_split`."""
    from sklearn.model_selection import train_test_split

    _, target = _digits()
    train, val = train_test_split(np.arange(len(target)), test_size=DIGITS_VALIDATION_SIZE,
                                  stratify=target, random_state=DIGITS_SPLIT_SEED)
    np.savez(path, train=train.astype(np.int16), val=val.astype(np.int16))


def digits_validation() -> ValidationSet:
    """The fixed, stratified 360-image validation split of the digits data."""
    _, _, x, y = _digits_split()
    return ValidationSet(torch.from_numpy(x.copy()), torch.from_numpy(y.copy()), 10, "digits-val")


def digits_train() -> ValidationSet:
    """The 1,437 training images that are not in the validation split."""
    x, y, _, _ = _digits_split()
    return ValidationSet(
        torch.from_numpy(x.copy()), torch.from_numpy(y.copy()), 10, "digits-train"
    )
