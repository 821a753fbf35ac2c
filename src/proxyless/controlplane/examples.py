"""Bundled example meshes (``proxyless/examples/*.yaml``) and their placeholders.

An example is Istio YAML whose endpoints are placeholders, so a demo can start
backends on free ports and fill them in: ``"{{NAME.address}}"`` becomes the
endpoint's IP address and ``{{NAME.port}}`` its port.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources

__all__ = [
    "example_endpoints",
    "example_names",
    "example_template",
    "render_example",
    "render_template",
    "template_endpoints",
]

_PLACEHOLDER = re.compile(r"\{\{([A-Za-z0-9_-]+)\.(address|port)\}\}")


def example_names() -> list[str]:
    """Names of the bundled examples (``reviews`` ...)."""
    folder = resources.files("proxyless").joinpath("examples")
    return sorted(
        entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml")
    )


def example_template(name: str) -> str:
    """The raw template text of example ``name``."""
    path = resources.files("proxyless").joinpath("examples").joinpath(f"{name}.yaml")
    if not path.is_file():
        raise ValueError(f"no bundled example {name!r}; examples: {', '.join(example_names())}")
    return path.read_text(encoding="utf-8")


def template_endpoints(template: str) -> list[str]:
    """The endpoint names a template needs, in order of appearance."""
    found = [m.group(1) for m in _PLACEHOLDER.finditer(template)]
    return list(dict.fromkeys(found))


def example_endpoints(name: str) -> list[str]:
    """The endpoint names example ``name`` needs, in order of appearance."""
    return template_endpoints(example_template(name))


def render_example(name: str, endpoints: Mapping[str, str | tuple[str, int]]) -> str:
    """Example ``name`` with its placeholders filled in.

    ``endpoints`` maps each endpoint name to ``"ip:port"`` or ``(ip, port)``;
    a missing or unknown name raises ValueError.
    """
    return render_template(example_template(name), endpoints, what=f"example {name!r}")


def render_template(
    template: str, endpoints: Mapping[str, str | tuple[str, int]], *, what: str = "the template"
) -> str:
    """A template with placeholders (see the module docstring) filled in, as
    :func:`render_example` does; ``what`` names it in errors."""
    needed = template_endpoints(template)
    missing = [n for n in needed if n not in endpoints]
    unknown = [n for n in endpoints if n not in needed]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown {', '.join(unknown)}")
        raise ValueError(f"{what} needs endpoints {', '.join(needed)}: {'; '.join(parts)}")
    resolved: dict[str, tuple[str, int]] = {}
    for key, value in endpoints.items():
        if isinstance(value, tuple):
            address, port = value
        else:
            address, _, port_text = value.rpartition(":")
            if not address or not port_text.isdigit():
                raise ValueError(f"endpoint {key}: expected 'ip:port', got {value!r}")
            port = int(port_text)
        resolved[key] = (address.strip("[]"), int(port))

    def fill(match: re.Match[str]) -> str:
        address, port = resolved[match.group(1)]
        return address if match.group(2) == "address" else str(port)

    return _PLACEHOLDER.sub(fill, template)
