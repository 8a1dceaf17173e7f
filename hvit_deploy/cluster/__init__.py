"""Running ``hvit-export`` and ``hvit-bench`` on a Ray cluster (``--cluster auto|ADDRESS``; ``pip install
"hvit-deploy[cluster]"``). See docs/cluster.md.

* :mod:`.export`: every job of the export plan (model x format x form) is one Ray task; the artifacts' bytes come back to the
  caller's ``--out`` and the manifest is updated as each task finishes, as a local run does.
* :mod:`.bench`: the benchmark profile runs on every node carrying a target's custom resource, one node at a time
  per target and the whole node each time; one results file per node, holding that node's environment.
* :mod:`._ray`: importing Ray (only here, only with ``--cluster``), connecting, what is shipped to the workers
  (the package with its recipes and profiles, ``--plugin`` files and the files named on the command line).
"""
