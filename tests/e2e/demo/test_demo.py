"""`proxyless demo` is the README's first command: it must work end to end."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_and_reports_the_mesh():
    res = subprocess.run(
        [sys.executable, "-m", "proxyless.cli", "demo", "--calls", "600"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert "route 'split': v1 90%, v2 10%" in out
    assert "reviews-v2          100  subset v2" in out  # the Mobile route
    assert "calls that failed at the caller: 0" in out
    assert "ejected by outlier detection: 127.0.0.1:" in out
    assert "OK: demo finished" in out
    assert "Traceback" not in res.stderr


def test_example_client_runs():
    res = subprocess.run(
        [sys.executable, "examples/reviews_client.py"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Mobile route (v2): {'reviews-v2': 50}" in res.stdout
