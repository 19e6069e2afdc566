"""Backends that exist only for the tests."""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig

from thinker.backends import Backend
from thinker.errors import NotAvailableYet


class NotLandedBackend(Backend):
    """A backend whose option composes but whose code comes in a later release: refused at config check
    (docs/configuration.md: an option can ship its config before its code)."""

    def check(self, cfg: DictConfig, env: Mapping[str, str]) -> None:
        raise NotAvailableYet(f"backend={self.name}", f"the {self.name} training backend", "use backend=local for now")
