"""A short run of the decoder fuzz harness (``fuzz/decoders.py``) in CI.

With atheris installed, the harness runs under libFuzzer in a subprocess for
a bounded number of inputs (coverage-guided, from the seed corpus); any
escaping exception or a hang past libFuzzer's per-input timeout fails it.
Always, the harness's check also runs in-process over the seeds mutated a
few hundred times each, so CI without atheris still exercises it.
"""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from .support import SCALE, mutate

HARNESS = Path(__file__).resolve().parents[2] / "fuzz" / "decoders.py"


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_decoders", HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_harness_over_mutated_seeds() -> None:
    harness = _harness()
    rng = random.Random(4)
    seeds = harness.seeds()
    for seed in seeds:
        harness.check_one(seed)
    for _ in range(300 * SCALE):
        seed = rng.choice(seeds)
        # keep the decoder byte most of the time, so mutations hit the payload
        data = seed[:1] + mutate(seed[1:], rng) if rng.random() < 0.9 else mutate(seed, rng)
        harness.check_one(data)


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_atheris_short_run(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    harness = _harness()
    harness.write_seeds(corpus)
    runs = 3000 * SCALE
    proc = subprocess.run(
        [sys.executable, str(HARNESS), str(corpus), f"-runs={runs}", "-timeout=10", "-seed=1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, tail
    assert f"Done {runs} runs" in proc.stderr, tail
