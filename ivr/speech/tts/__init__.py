"""Speech synthesis: pyttsx3 over espeak-ng, rendered at the call's rate, streamed and cached.

>>> synth = get_synthesizer()                         # shared by every call of the process
>>> pcm = synth.synthesize("Thanks for calling.", 8000)  # PCM16 mono bytes
>>> for chunk in synth.stream("Please hold.", 16000): ...
"""

from __future__ import annotations

from ivr.speech.tts.cache import CacheStats, PromptCache, default_cache_dir
from ivr.speech.tts.config import SynthesizerConfig
from ivr.speech.tts.espeak import EspeakEngine, Voice, shared_engine
from ivr.speech.tts.prompts import load_wav_prompt, prompt_audio
from ivr.speech.tts.synthesizer import EspeakSynthesizer, get_synthesizer

__all__ = [
    "CacheStats",
    "EspeakEngine",
    "EspeakSynthesizer",
    "PromptCache",
    "SynthesizerConfig",
    "Voice",
    "default_cache_dir",
    "get_synthesizer",
    "load_wav_prompt",
    "prompt_audio",
    "shared_engine",
]
