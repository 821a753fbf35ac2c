"""The tests' Envoy launcher (``proxyless.testing.controlplane.EnvoyProcess``):
an Envoy that dies before writing any log is started again with the same
bootstrap, and a start that fails for good says what Envoy wrote to stderr."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from proxyless.testing import controlplane
from proxyless.testing.controlplane import EnvoyProcess

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(90)]

BOOTSTRAP = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}}


def _wrapper(tmp_path: Path, failures: int) -> str:
    """An ``envoy`` that exits 1 (a line on stderr, no log) ``failures`` times,
    then runs the real one."""
    real = controlplane.envoy_binary()  # called before the test replaces it
    count = tmp_path / "count"
    script = tmp_path / "envoy"
    script.write_text(
        "#!/bin/sh\n"
        f'n=$(cat "{count}" 2>/dev/null || echo 0)\n'
        f'echo $((n + 1)) > "{count}"\n'
        f'if [ "$n" -lt {failures} ]; then echo "died at start $n" >&2; exit 1; fi\n'
        f'exec "{real}" "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_an_envoy_dying_at_start_is_started_again_with_its_bootstrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrapper = _wrapper(tmp_path, failures=2)
    monkeypatch.setattr(controlplane, "envoy_binary", lambda: wrapper)
    with EnvoyProcess(BOOTSTRAP) as envoy:
        assert envoy.get("/ready").strip() == "LIVE"
        workdir = os.path.dirname(envoy.bootstrap_path)
    assert (tmp_path / "count").read_text().strip() == "3"
    assert not os.path.exists(workdir)  # cleaned up on stop


def test_a_start_failing_for_good_names_what_envoy_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrapper = _wrapper(tmp_path, failures=9)
    monkeypatch.setattr(controlplane, "envoy_binary", lambda: wrapper)
    envoy = EnvoyProcess(BOOTSTRAP)
    with pytest.raises(RuntimeError, match="exited with 1; stderr: died at start 2"):
        envoy.start(timeout=20)
    assert not os.path.exists(os.path.dirname(envoy.bootstrap_path))
