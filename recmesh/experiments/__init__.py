"""A/B experiments: split visitors between variants of the recommendation options and compare what they do.

Modules: ``config`` (the configuration stored in Redis under ``recmesh:experiments``: parsing, validation, the
merge of a variant's options into a request's), ``assign`` (the stateless hash that puts a visitor in a
variant), ``attribution`` (recommendation ids that carry the experiment and the variant, so an event is
attributed with no state per recommendation), ``report`` (rates per variant with their intervals and the test
against the control), ``commands`` (`recmesh experiments start|stop|list|show|report`). The gateway follows the
key and assigns requests (gateway/experiments.py) and counts impressions (gateway/experiment_counts.py).
"""
