"""optalloc: fulfillment-center capacity allocation and capacity-reservation market clearing."""

__version__ = "0.1.0"
