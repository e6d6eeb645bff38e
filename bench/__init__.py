"""The benchmark harness of issue 3: ``python -m bench`` (``make bench``).

Every measurement is a function of its own (`throughput`, `naive`, `memory`,
`scaling`, `cost`, `lag`) run on one generated reference workload
(`workload`); ``__main__`` runs them, prints a table and writes
``bench/results.json``. Figures of one run are only ever compared with
figures of the same run: ratios are taken between measurements made side by
side, because the machines are shared and noisy.
"""
