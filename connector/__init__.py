"""CRM sales-process automation connector: homologated win probabilities, computed fields,
actions exactly once, and the revenue forecast."""

__version__ = "0.1.0"
