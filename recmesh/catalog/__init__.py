"""The item catalogue: items' attributes (category, brand, price, available, ...), filters over them, and the
per-request rules that reorder an answer (boosts, pins, diversity).

Modules: ``table`` (the attributes, columnar, in memory), ``files`` (reading items from JSONL / CSV),
``expressions`` (the filter language, compiled to vectorised masks), ``live`` (the live catalogue in Redis: its
keys, the write script, reading changes), ``rerank`` (rules, pins, diversity applied to a ranked list).
"""
