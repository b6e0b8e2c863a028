"""The import sanity check at full size (compiler/probe.py): pooled int8 features of mcunet-5fps on the
CIFAR-10 subset at 128 px must reach the issue's 55% linear-probe test accuracy. Minutes of CPU: slow."""

from __future__ import annotations

import pytest

from compiler import probe
from compiler.cli import default_data, default_model


@pytest.mark.slow
def test_linear_probe_mcunet_reaches_the_bar() -> None:
    r = probe.linear_probe(default_model(), default_data())
    assert (r.train, r.test, r.features, r.classes) == (probe.DEFAULT_TRAIN, probe.DEFAULT_TEST, 160, 10)
    assert r.accuracy >= probe.MIN_ACCURACY, f"linear probe {r.accuracy:.3f} < {probe.MIN_ACCURACY}"
