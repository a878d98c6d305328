"""``evoq-train evolve``: the self-evolution loop as one resumable command.

config.py (settings, checks, fingerprint), checks.py (what the run reads, checked on disk:
nothing of the run inside the pool, eval manifests' contents, the contents' hashes), layout.py (every path and step name of a run
folder), context.py (the user's paths as the children see them, who votes and trains each
round), commands.py (the child steps' command lines, pure), work.py (the in-process steps and
the readers of what a command depends on), steps.py (the steps in order), state.py
(RUN/state.json and content hashes), run.py (the loop, resume, child processes), lineage.py
(RUN/lineage.json, the card entries, the lineage table), report.py (RUN/report.md and
report.png). See docs/evolve.md.
"""
