"""Sinks: where the per-window values of :mod:`streams.readout` go, one module each.

A push sink takes a :class:`streams.readout.Reader` and has ``async run()`` (the worker starts
it as a task); a pull sink (the Prometheus text) reads :meth:`streams.readout.Readout.windows`
when asked. Adding a sink is one module here and one line in ``Service.sinks``
(:mod:`streams.app`).
"""
