"""Speech engines: voice activity detection, recognition and synthesis (the only place they are imported)."""
