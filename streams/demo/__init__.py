"""Demo event generator: a synthetic sales floor (`mix`, pure) and its Kafka producer (`generator`).

Kept apart from the worker so the same deterministic event stream can feed the live demo, the
unit tests (no Kafka) and the benchmark's pre-produced data.
"""
