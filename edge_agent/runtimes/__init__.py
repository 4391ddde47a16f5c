"""Runtimes: the engines that run a model package on a device, created by name from one registry.

`available_runtimes()` is what the agent advertises in its status (only runtimes whose optional dependency
imports here); `choose_runtime` picks one of those that the package supports; `create_runtime` builds it.
The interface (`Runtime`: load, infer, close, info) and the input and output conventions are in `base`.
"""

import importlib
from collections.abc import Sequence

from edge_agent.runtimes import cpu_int8, reference  # noqa: F401  (importing them registers them)
from edge_agent.runtimes.base import (
    RUNTIMES,
    Runtime,
    RuntimeNotLoaded,
    RuntimeUnavailable,
    nchw_batch,
    register_runtime,
)

__all__ = [
    "Runtime",
    "RuntimeNotLoaded",
    "RuntimeUnavailable",
    "available_runtimes",
    "choose_runtime",
    "create_runtime",
    "nchw_batch",
    "register_runtime",
]

_importable: dict[str, bool] = {}


def _imports(module: str) -> bool:
    if module not in _importable:
        try:
            importlib.import_module(module)
            _importable[module] = True
        except ImportError:
            _importable[module] = False
    return _importable[module]


def available_runtimes() -> list[str]:
    """The registered runtimes whose optional dependencies import on this machine, sorted by name."""
    return sorted(name for name, cls in RUNTIMES.items() if all(_imports(module) for module in cls.requires))


def create_runtime(name: str, **options) -> Runtime:
    """A new, unloaded runtime; `options` go to its constructor (e.g. `threads=2` for cpu-int8)."""
    if name not in RUNTIMES:
        raise RuntimeUnavailable(f"no runtime named {name!r}; registered runtimes: {sorted(RUNTIMES)}")
    cls = RUNTIMES[name]
    if missing := [module for module in cls.requires if not _imports(module)]:
        raise RuntimeUnavailable(f"runtime {name!r} needs {', '.join(missing)}, which does not import here")
    return cls(**options)


def choose_runtime(package_runtimes: Sequence[str], preferred: str | Sequence[str] | None = None) -> str:
    """The runtime to load a package with: one the package supports and this agent has.

    `preferred` (a name or names in order, from the agent's configuration) is tried first, then the package's
    own order. Raises RuntimeUnavailable naming both lists when the package supports none of the agent's runtimes.
    """
    available = available_runtimes()
    preferred = [preferred] if isinstance(preferred, str) else list(preferred or [])
    for name in [*preferred, *package_runtimes]:
        if name in package_runtimes and name in available:
            return name
    raise RuntimeUnavailable(
        f"no runtime fits: the package supports {list(package_runtimes)}, this agent has {available}; "
        "install the missing runtime's dependency or deploy a package built for one of the agent's runtimes"
    )
