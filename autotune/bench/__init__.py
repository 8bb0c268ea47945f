"""Benchmarks over the dispatch core (``autotune bench``).

* :mod:`autotune.bench.suite` — every kernel of a suite timed side by side with the tuner's
  evaluator, against torch and this machine's peak (``bench.json``/``.md``/``.png``);
* :mod:`autotune.bench.versus` — plain PyTorch in a process of its own against the dispatcher in
  another, alternating rounds (``--vs-torch``, ``--model``);
* :mod:`autotune.bench.cli` — the verb. Importing this package is light: the CLI registers the
  verb at start-up without loading numpy.
"""
