"""``evoq-train evolve``: the self-evolution loop as one resumable command.

config.py (settings, checks, fingerprint), state.py (RUN/state.json and content hashes),
steps.py (the plan: one builder per step, each a child process), run.py (the loop, resume,
child processes), lineage.py (RUN/lineage.json, the card entries, the lineage table),
report.py (RUN/report.md and report.png). See docs/evolve.md.
"""
