"""What a model call cost, from the upstream's usage and a price table (USD per million tokens).

The gateway computes cost itself, from the tokens the upstream reported, never from the CLI's own
estimate. Prices are matched by the longest model-name prefix, so a dated id such as
``claude-sonnet-4-5-20250929`` takes the ``claude-sonnet-4-5`` row. The defaults are Anthropic's
list prices; ``PYNCHY_MODEL_PRICES`` replaces or adds rows.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from pynchy.gateway.usage import ModelUsage


class Price(BaseModel):
    """USD per million tokens of each kind."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0, description="Uncached input tokens.")
    output: float = Field(ge=0, description="Output tokens.")
    cache_write: float = Field(ge=0, description="Tokens written to the prompt cache (5-minute TTL).")
    cache_read: float = Field(ge=0, description="Tokens read from the prompt cache.")


def _price(input_: float, output: float) -> Price:
    # Anthropic's list: cache writes cost 1.25x input, cache reads 0.1x input.
    return Price(input=input_, output=output, cache_write=input_ * 1.25, cache_read=input_ * 0.1)


DEFAULT_PRICES: dict[str, Price] = {
    "claude-opus-4-5": _price(5.0, 25.0),
    "claude-opus-4-1": _price(15.0, 75.0),
    "claude-opus-4": _price(15.0, 75.0),
    "claude-sonnet-4-5": _price(3.0, 15.0),
    "claude-sonnet-4": _price(3.0, 15.0),
    "claude-3-7-sonnet": _price(3.0, 15.0),
    "claude-haiku-4-5": _price(1.0, 5.0),
    "claude-3-5-haiku": _price(0.8, 4.0),
    "claude-3-haiku": _price(0.25, 1.25),
}
# A model no row matches is charged as the most expensive row: a budget must not be a way round.
FALLBACK = "claude-opus-4-1"


def price_of(model: str | None, prices: Mapping[str, Price]) -> Price:
    name = (model or "").lower()
    matches = [key for key in prices if name.startswith(key.lower())]
    if matches:
        return prices[max(matches, key=len)]
    return max(prices.values(), key=lambda p: p.output) if prices else DEFAULT_PRICES[FALLBACK]


def cost_usd(usage: ModelUsage, prices: Mapping[str, Price]) -> float:
    p = price_of(usage.model, prices)
    total = (
        usage.input_tokens * p.input
        + usage.output_tokens * p.output
        + usage.cache_creation_input_tokens * p.cache_write
        + usage.cache_read_input_tokens * p.cache_read
    )
    return total / 1_000_000


def tokens_of(usage: ModelUsage) -> int:
    return usage.input_tokens + usage.output_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens
