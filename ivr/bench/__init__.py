"""Benchmarks behind `ivr bench`: each returns a dict of medians measured on this machine."""
