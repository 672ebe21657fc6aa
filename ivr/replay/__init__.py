"""Audio-fixture replay: scripted callers run through the real call pipeline, faster than real time."""
