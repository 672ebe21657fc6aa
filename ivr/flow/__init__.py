"""Call flows: YAML → checked Flow → per-call interpreter (no I/O of its own)."""
