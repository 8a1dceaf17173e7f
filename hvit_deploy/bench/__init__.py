"""``hvit-bench``: batch-1 latency of exported models on every runtime, and CI regression reports.

* :mod:`.profiles` — the YAML protocols in ``profiles/``; :mod:`.request` — :class:`~.request.BenchRequest`, one
  validated run (from the CLI or Python) and its ``jobs()``, executed alike locally and on ``--cluster`` nodes.
* :mod:`.schema` — the typed results records (:class:`~.schema.ResultsDoc`, :class:`~.schema.ResultsEntry`);
  :mod:`.messages` — the typed coordinator/worker messages.
* :mod:`.runner` — the coordinator: one worker process per model and runtime, interleaved rounds, results file;
  :mod:`.process` starts and talks to the worker processes; :mod:`.artifacts` is the export cache.
* :mod:`.worker` — what runs inside a worker: one runtime session (from :mod:`hvit_deploy.runtimes`), the
  timing loop.
* :mod:`.stats` — summaries, the median's CI, block statistics for comparisons.
* :mod:`.compare` / :mod:`.report` — ``hvit-bench compare``: verdicts, Markdown report, exit codes.
"""
