"""Every Bookinfo networking sample analyzes clean with Bookinfo's services."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.interop.bookinfo_samples import DATA, SAMPLES, WORKLOADS, services_text

from proxyless.cli import main
from proxyless.controlplane.istio.analyze import analyze_files


@pytest.fixture
def services(tmp_path: Path) -> Path:
    path = tmp_path / "services.yaml"
    path.write_text(services_text({w: 20000 + i for i, w in enumerate(WORKLOADS)}))
    return path


@pytest.mark.parametrize("sample", SAMPLES)
def test_sample_analyzes_clean(services: Path, sample: str) -> None:
    issues = analyze_files([services, DATA / "destination-rule-all.yaml", DATA / sample])
    assert [str(i) for i in issues if i.severity != "info"] == []


def test_all_samples_together_need_one_virtual_service_per_host(
    services: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The samples are alternatives: two of them for one host are IST0109, as in istioctl."""
    files = [str(services), str(DATA / "destination-rule-all.yaml")]
    assert main(["analyze", *files, str(DATA / SAMPLES[0])]) == 0
    capsys.readouterr()
    assert main(["analyze", *files, str(DATA / SAMPLES[0]), str(DATA / SAMPLES[1])]) == 1
    assert "[IST0109]" in capsys.readouterr().out
