"""Import sanity check, linear probe: model file + data set -> test accuracy of a linear classifier.

If the importer and the int8 arithmetic are right, the pooled int8 features of an ImageNet model
carry class information: a linear classifier fitted on the train features of the CIFAR-10 subset
(resized to the model resolution) classifies the test images far above chance. The bar for
mcunet-5fps at 128 px is 55% (a broken import, wrong zero points or a mangled layout fall to
chance, 10%).

Steps: pooled features from the reference executor (`reference.features`), dequantised
f = (q - zero) * scale, standardised with the train mean and standard deviation, then a
multinomial logistic regression (softmax cross-entropy + small L2) fitted full-batch with L-BFGS
in float64 torch from zero weights (a convex problem: deterministic, no seed-dependent start).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from compiler import data, reference
from compiler.importers import tiny_training

MIN_ACCURACY = 0.55  # the bar for mcunet-5fps on the CIFAR-10 subset
DEFAULT_TRAIN = 2000  # class-balanced; ~60% for mcunet-5fps, about two minutes on two cores
DEFAULT_TEST = 1000


@dataclass(frozen=True)
class ProbeResult:
    accuracy: float  # test accuracy in [0, 1]
    train_accuracy: float
    train: int  # images used
    test: int
    features: int
    classes: int
    seconds: float


def standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale both sets with the train mean and standard deviation (constant features stay 0)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return (train - mean) / std, (test - mean) / std


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with n torch intra-op threads, then restore the previous setting."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def fit_logistic(x: np.ndarray, y: np.ndarray, classes: int, l2: float = 1e-3,
                 max_iter: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression, full-batch L-BFGS; returns (weight [C, F], bias [C]).

    One thread: the matrices are small (N x F x C), and several spinning threads on a busy machine
    made each step tens of times slower. Same thread count, same reduction order: deterministic.
    """
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float64))
    yt = torch.from_numpy(np.asarray(y, np.int64))
    w = torch.zeros((classes, x.shape[1]), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w.T + b, yt) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch_threads(1):
        opt.step(closure)
    return w.detach(), b.detach()


def accuracy(x: np.ndarray, y: np.ndarray, w: torch.Tensor, b: torch.Tensor) -> float:
    if len(y) == 0:
        return 0.0
    logits = torch.from_numpy(np.ascontiguousarray(x, np.float64)) @ w.T + b
    return float((logits.argmax(dim=1).numpy() == y).mean())


def pooled_features(graph, images: np.ndarray, desc: str, progress: bool = True) -> np.ndarray:
    """Dequantised pooled features [N, F] (float64) of int8 images, with a progress bar on stderr."""
    feat = graph.tensors[graph.head.input]
    with tqdm(total=len(images), desc=desc, unit="img", file=sys.stderr, disable=not progress,
              leave=False) as bar:
        q = reference.features(graph, images, progress=bar.update)
    return (q.astype(np.float64) - feat.zero) * feat.scale


def linear_probe(model: Path, data_path: Path, train: int = DEFAULT_TRAIN, test: int = DEFAULT_TEST,
                 resolution: int | None = None, progress: bool = True) -> ProbeResult:
    """Fit a linear classifier on the pooled features of `train` images; return test accuracy."""
    t0 = time.perf_counter()
    graph = tiny_training.load(Path(model), resolution)
    res = graph.tensors[graph.input].shape[0]
    ds = data.load(data_path, res, limit_train=train, limit_test=test)
    classes = max(len(ds.classes), int(ds.train.y.max(initial=0)) + 1)
    f_train = pooled_features(graph, ds.train.x, "probe features (train)", progress)
    f_test = pooled_features(graph, ds.test.x, "probe features (test)", progress)
    f_train, f_test = standardise(f_train, f_test)
    w, b = fit_logistic(f_train, ds.train.y, classes)
    return ProbeResult(accuracy(f_test, ds.test.y, w, b), accuracy(f_train, ds.train.y, w, b), len(ds.train.y),
                       len(ds.test.y), f_train.shape[1], classes, time.perf_counter() - t0)
