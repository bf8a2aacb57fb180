"""`salespulse bench` and the tools beside it: throughput against baselines and end-to-end latency,
in one run.

Why it is built this way:

* The box is small and shared, so absolute rates swing by ±20 % from one minute to the next
  (shared notes, faust-internals §4). Only ratios measured within one run mean anything, so one
  command produces one data set and runs every contender against it back to back; a repeat of
  the bare consumer at the end shows how much the box drifted meanwhile.
* Every run uses fresh topics (``bench-<runid>.sales.*``) and fresh consumer groups / app ids,
  so no contender starts from someone else's offsets or state.
* Each contender is timed from the first record it processed to the last: Faust start-up and the
  group rebalance take seconds and say nothing about the streaming rate.
* The salespulse worker is a black box here, exactly as deployed (``python -m streams.cli
  worker``, loglevel INFO): everything is read from its /metrics and from the broker. Its
  completion needs the events accounted for *and* the state durable (keyed-events commits at
  the end offsets, checked on the broker, because Faust's own view of committed offsets can be
  wrong: shared notes §3).
* The worker renders /metrics on the event loop that processes events, and a render of 1,000
  reps takes seconds, not tens of milliseconds. So (b), polled every 50 ms as specified, also
  reports the share of its timed interval spent inside scrapes, and (b') times a second fresh
  worker from the broker alone (no scrape while it works).
* The latency probe measures what a dashboard sees: from the send of an event to the first
  observation that includes it, under a steady background load at half the measured rate, so
  that it is the latency of a worker with headroom, not of a saturated one. /metrics is
  observed as in production: a full scrape every ``--scrape-interval`` s (Prometheus scrapes
  every 1-5 s), plus the probe's own poll of ``/metrics?name[]=<its metric>`` every 25 ms (one
  family from the same render cache), which times when the value is visible; Redis and the SSE
  stream are watched too. The workers' Redis is SALESPULSE_REDIS_URL or, when none answers
  there, a ``redis-server`` the bench starts in its run dir.
* The run ends with SPEC section 7's figures, one line each with goal, figure and verdict
  (:func:`streams.bench.report.spec_rows`); ``--mix lead-heavy`` runs the same on a floor where ~40% of the events
  also travel the lead lane; ``--tracemalloc`` adds (m), a traced worker's largest allocation
  sites after the backlog.

Contenders: (a) bare aiokafka ``getmany`` + ``json.loads`` (the floor any Python consumer pays),
(b)/(b') the salespulse worker, (c) a stock Faust agent that only decodes, (d) the same plus
one windowed-table write per event. (c) and (d) are slow (about 4k/s and 1.5k/s here), so by
default they read only the first ``--stock-events`` of the same records, on their own topics.

The package, a module per part: :mod:`~streams.bench.run` (the command line and the run, phase by
phase), :mod:`~streams.bench.plumbing` (constants, results, the run's directory and child
processes, Redis, RSS), :mod:`~streams.bench.data` (the records and topics),
:mod:`~streams.bench.workers` (the contenders), :mod:`~streams.bench.latency`,
:mod:`~streams.bench.alone` (the render and tracemalloc in a child), :mod:`~streams.bench.group`
(two workers of one group and their restarts) and :mod:`~streams.bench.report`. Beside it, tools
of their own: ``python -m streams.bench.rounds`` (one output round per step),
``python -m streams.bench.render`` (the /metrics render alone) and
``python -m streams.bench.contenders.hotpath`` (the two stages in process).
"""
