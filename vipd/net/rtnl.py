"""pyroute2's rtnetlink sockets, imported without pyroute2's package ``__init__``.

``import pyroute2`` (0.9) eagerly imports every subsystem it has: NDB, IPDB, conntrack, ipset,
IPVS, wireless, WireGuard and more, about 15 MB of RSS in every vipd process, which only ever
talks rtnetlink. Importing a submodule imports its package first, so we register the package
as a bare namespace (its real search path, none of its ``__init__``) before importing the two
modules we use. If pyroute2 was already imported whole (a test, another library), the same
submodules come from it; if something asks the bare package for more later, its ``__init__``
runs then, in place.
"""

from __future__ import annotations

import importlib.util
import sys
import types

if "pyroute2" not in sys.modules:
    _spec = importlib.util.find_spec("pyroute2")
    if _spec is None or _spec.submodule_search_locations is None:
        raise ImportError("pyroute2 is not installed (pip install pyroute2)")
    _package = types.ModuleType("pyroute2")
    _package.__spec__ = _spec
    _package.__path__ = list(_spec.submodule_search_locations)

    def _whole(name: str) -> object:
        """PEP 562: ``from pyroute2 import submodule`` imports just that submodule; any other
        ``from pyroute2 import X`` loads the whole package after all."""
        try:
            return importlib.import_module(f"pyroute2.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pyroute2.{name}":
                raise
        del _package.__getattr__
        assert _spec is not None and _spec.loader is not None
        _spec.loader.exec_module(_package)
        return getattr(_package, name)

    _package.__getattr__ = _whole  # type: ignore[method-assign]
    sys.modules["pyroute2"] = _package

from pyroute2.iproute import AsyncIPRoute, IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_LINK

__all__ = ["RTMGRP_LINK", "AsyncIPRoute", "IPRoute", "NetlinkError"]
