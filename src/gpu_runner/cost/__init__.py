"""What GPU machines cost: prices per hour (:mod:`.prices`, from the matrix, the Cloud Billing
Catalog (:mod:`.catalog`) or the shipped table) and what each entry's VMs cost for as long as they
lived. Every figure is an estimate that names its source and date."""

from __future__ import annotations

from .prices import (
    MODELS,
    HourlyPrice,
    PriceBook,
    Shape,
    machine_shape,
    money,
    origin,
    region_of,
    table,
    worst_case_usd,
)

__all__ = ["MODELS", "HourlyPrice", "PriceBook", "Shape", "machine_shape", "money", "origin", "region_of", "table",
           "worst_case_usd"]
