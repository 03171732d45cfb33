"""Per-unit prices and where a price comes from: what the price table (:mod:`.prices`) and the
Cloud Billing Catalog (:mod:`.catalog`) both read into, so that neither needs the other for it."""

from __future__ import annotations

from dataclasses import dataclass, field

SOURCE_MATRIX = "matrix"
SOURCE_CATALOG = "billing-catalog"
SOURCE_TABLE = "table"
SOURCE_NAMES = {SOURCE_MATRIX: "the matrix's price_per_hour", SOURCE_CATALOG: "Cloud Billing Catalog",
                SOURCE_TABLE: "gpu-runner's price table"}


@dataclass
class Rates:
    """Per-unit prices from one source, for one region and provisioning model: what
    :func:`.prices.price_from_rates` multiplies a :class:`.prices.Shape` by."""

    source: str
    as_of: str | None
    vcpu_hour: dict[str, float] = field(default_factory=dict)
    """By machine family (``n1``, ``g2``, ...)."""
    gib_hour: dict[str, float] = field(default_factory=dict)
    gpu_hour: dict[str, float] = field(default_factory=dict)
    """By accelerator type (``nvidia-l4``, ...)."""
    disk_gib_month: dict[str, float] = field(default_factory=dict)
    """By disk type (``pd-balanced``, ...)."""
