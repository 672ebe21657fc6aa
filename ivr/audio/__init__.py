"""Audio frames and audio files: the internal format is 20 ms of PCM16 mono at 8 or 16 kHz."""
