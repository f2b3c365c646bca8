"""`narwhal-testbed bench`: what the pipeline sustains on this machine, against what the
machine itself can do for the same work, and what each request costs in CPU.

`knee` is the search (sans-IO: results in, next rate out), `ceiling` measures the
machine's own speed for hashing, synced storing, loopback copies and AEAD and sets the
knee against it, `cost` turns a run's CPU into per-MB and per-request figures, `run`
drives the experiments and assembles the JSON, `targets` judges it against the issue's
targets.
"""
