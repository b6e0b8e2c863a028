"""tt_grad_quantize_s16 (runtime_c/tt_train.c) against the element-wise form it replaced, bit for bit.

tests/c/grad_quantize_check.c holds the element-wise form (the one compiler/training.py mirrors) and compares every
int16 value and the sigma bits on random and edge inputs (inf, NaN, -0, denormals, all-zero masks, amax below
TT_GRAD_MIN, C_out across the channel-chunk boundaries). It is built twice: with rintf (Cortex-M7, host) and with
the 1.5 * 2^23 rounding the Cortex-M4 build uses.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tt_support import require_tool

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("magic", [0, 1], ids=["rintf", "magic-round"])
def test_grad_quantize_matches_elementwise_form(tmp_path, magic):
    gcc = require_tool("gcc")
    exe = tmp_path / "grad_quantize_check"
    subprocess.run([gcc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off",
                    "-ffunction-sections", "-Wl,--gc-sections", f"-DTT_GQ_ROUND_MAGIC={magic}",
                    f"-I{ROOT / 'runtime_c'}", "-o", str(exe), str(ROOT / "tests" / "c" / "grad_quantize_check.c"),
                    str(ROOT / "runtime_c" / "tt_train.c"), "-lm"], check=True)
    r = subprocess.run([str(exe)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all int16 values and sigma bits identical" in r.stdout, r.stdout
