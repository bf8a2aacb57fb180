"""Helper programs of `salespulse bench` that must run in their own process.

They are separate processes for the same reason the salespulse worker is: a Faust worker owns its
event loop, logging and signal handling, and the load generator of the latency phase must not
share a CPU-bound loop with the code that measures latency.
"""
