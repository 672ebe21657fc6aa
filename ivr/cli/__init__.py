"""The ``ivr`` command line."""
