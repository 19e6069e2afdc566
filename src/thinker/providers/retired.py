"""Providers that run no fine-tuning jobs. They stay `provider=` options so choosing one says exactly why it
cannot work and what to use instead, at config check, before anything is uploaded.
"""

from __future__ import annotations

from thinker.providers.adapter import Capabilities, ProviderAdapter

LIVE_ALTERNATIVES = ["together", "fireworks", "openai"]


class RetiredProvider(ProviderAdapter):
    """A provider whose capability report is the reason it cannot fine-tune (provider.options.reason)."""

    def capabilities(self) -> Capabilities:
        return Capabilities(provider=self.name, available=False, unavailable_reason=str(self.options["reason"]),
                            alternatives=LIVE_ALTERNATIVES)

    def validate(self, job):  # noqa: ANN001, ANN201 - nothing to check: it refuses before
        return []
