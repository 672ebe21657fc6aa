"""Recognition of real human speech over a phone line (the evaluation set of ``ivr bench wer``).

The recordings are the Asterisk core prompts (Debian ``asterisk-core-sounds-en-wav``: one professional
voice, 8 kHz), put through the same phone line as the benchmark (300–3400 Hz, G.711). Short answers are
what callers mostly say to an IVR; these must come out exact, without the repeats the old fast path made.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ivr.audio.frame import AudioFrame, samples_per_frame
from ivr.audio.wavfile import float_to_pcm16, resample
from ivr.bench import corpus
from ivr.bench.wer import normalize, repeats
from ivr.events import Transcript, Word
from ivr.nlu.slots import parse_slot
from ivr.speech.asr import load_engine
from ivr.speech.interfaces import AsrEngine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prompts() -> dict[str, corpus.Utterance]:
    try:
        return {u.id.removeprefix("asterisk/"): u for u in corpus.asterisk()}
    except corpus.CorpusError as exc:
        pytest.fail(f"{exc} (see the README's test command)")


@pytest.fixture(scope="module")
def whisper() -> AsrEngine:
    return load_engine("whisper")


def hear(engine: AsrEngine, utterance: corpus.Utterance, grammar: list[str] | None = None) -> Transcript:
    """The utterance over the phone line, fed to a call's 8 kHz recognizer frame by frame."""
    pcm = float_to_pcm16(corpus.line_audio(utterance))
    step = samples_per_frame(8000) * 2
    recognizer = engine.new_recognizer(8000, grammar)
    for i in range(0, len(pcm) - step + 1, step):
        recognizer.accept(AudioFrame(pcm[i:i + step], 8000))
    return recognizer.finish()


DIGITS = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]


@pytest.mark.parametrize("digit", DIGITS)
def test_a_spoken_digit_comes_out_exact_and_once(whisper: AsrEngine, prompts: dict[str, corpus.Utterance],
                                                 digit: str) -> None:
    heard = hear(whisper, prompts[f"digits/{digit}"])
    assert parse_slot("digits", heard.text) == digit, heard.text  # not "0 0 0 0 0 0"


def test_short_answers_never_repeat(whisper: AsrEngine, prompts: dict[str, corpus.Utterance]) -> None:
    shorts = [u for name, u in sorted(prompts.items()) if name.startswith("digits/")]
    looped = [(u.text, heard.text) for u in shorts if repeats((heard := hear(whisper, u)).text)]
    assert not looped, looped


def test_a_sentence_is_not_repeated_into_the_padding(whisper: AsrEngine, prompts: dict[str, corpus.Utterance]) -> None:
    heard = hear(whisper, prompts["conf-leaderhasleft"])  # was "The leader has left the conference. The leader…"
    assert normalize(heard.text) == "the leader has left the conference", heard.text


def test_words_carry_their_own_probability_and_time(whisper: AsrEngine, prompts: dict[str, corpus.Utterance]) -> None:
    utterance = prompts["vm-dialout"]  # "Please wait while I connect your call."
    heard = hear(whisper, utterance)
    duration = len(corpus.line_audio(utterance)) / 8000
    assert [w.text.strip(".,").lower() for w in heard.words] == normalize(heard.text).split()
    assert len({w.confidence for w in heard.words}) > 1  # per word, not the utterance's score copied
    assert all(0.0 <= w.start <= w.end <= duration + 0.5 for w in heard.words)
    assert [w.start for w in heard.words] == sorted(w.start for w in heard.words)
    assert heard.confidence == pytest.approx(np.mean([w.confidence for w in heard.words]), abs=1e-3)


def test_a_rating_snaps_to_the_grammar(whisper: AsrEngine, prompts: dict[str, corpus.Utterance]) -> None:
    grammar = ["one", "two", "three", "four", "five"]
    for number, word in (("5", "five"), ("3", "three"), ("1", "one")):
        heard = hear(whisper, prompts[f"digits/{number}"], grammar)
        assert heard.text == word and not heard.rejected, (number, heard)


def test_noise_is_not_heard_as_words(whisper: AsrEngine) -> None:
    rng = np.random.default_rng(7)
    line = corpus.phone_line((0.05 * rng.standard_normal(8000 * 3)).astype(np.float32))
    pcm = float_to_pcm16(line)
    recognizer = whisper.new_recognizer(8000)
    step = samples_per_frame(8000) * 2
    for i in range(0, len(pcm) - step + 1, step):
        recognizer.accept(AudioFrame(pcm[i:i + step], 8000))
    heard = recognizer.finish()
    assert not heard.text or heard.confidence < 0.35 or not repeats(heard.text), heard


def test_the_phone_line_keeps_the_voice_band_only() -> None:
    rate = 8000
    t = np.arange(rate) / rate
    tones = {f: (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (100, 1000, 3800)}
    kept = {f: float(np.sqrt(np.mean(corpus.phone_line(x) ** 2)) / np.sqrt(np.mean(x ** 2))) for f, x in tones.items()}
    assert kept[1000] > 0.9 and kept[100] < 0.05 and kept[3800] < 0.05, kept


def test_the_mobile_line_adds_noise_at_the_stated_level_and_codes_with_amr(
        prompts: dict[str, corpus.Utterance]) -> None:
    utterance = prompts["vm-dialout"]
    fixed, mobile = corpus.line_audio(utterance, "g711"), corpus.line_audio(utterance, "mobile")
    assert len(mobile) == len(fixed) and mobile.dtype == np.float32
    assert np.array_equal(mobile, corpus.line_audio(utterance, "mobile"))  # the same noise every run
    # the codec delays the speech by a few ms; aligned, what differs is the noise and the codec's distortion
    lag = int(np.argmax(np.correlate(mobile[:8000], fixed[:8000], "full"))) - 7999
    assert 0 <= lag < 80, lag
    difference = mobile[lag:] - fixed[: len(fixed) - lag]
    distortion_db = 20 * np.log10(corpus.speech_level(difference) / corpus.speech_level(fixed))
    assert -25 < distortion_db < -6, distortion_db  # noise at -20 dB plus AMR's quantisation, not a lost voice
    with pytest.raises(corpus.CorpusError, match="g711, mobile"):
        corpus.line_audio(utterance, "satellite")


def test_pink_noise_and_the_speech_level() -> None:
    noise = corpus._pink_noise(80000, seed=3)
    spectrum = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(len(noise), 1 / 8000)
    octave_low, octave_high = spectrum[(freqs >= 250) & (freqs < 500)], spectrum[(freqs >= 2000) & (freqs < 4000)]
    ratio_db = 10 * np.log10(octave_low.mean() / octave_high.mean())
    assert 7 < ratio_db < 11, ratio_db  # three octaves apart: 3 dB each
    assert float(np.sqrt(np.mean(noise**2))) == pytest.approx(1.0)
    voice = np.concatenate([0.1 * np.ones(8000, np.float32), np.zeros(8000, np.float32)])
    assert corpus.speech_level(voice) == pytest.approx(0.1, rel=1e-3)  # the pause does not lower it


def test_the_evaluation_set_is_real_speech_split_for_good(prompts: dict[str, corpus.Utterance]) -> None:
    utterances = list(prompts.values())
    assert len(utterances) > 400
    dev = {u.id for u in corpus.choose(utterances, "dev")}
    test = {u.id for u in corpus.choose(utterances, "test")}
    assert not dev & test and 0.25 < len(dev) / len(utterances) < 0.42
    assert {u.split for u in corpus.asterisk()} == {"dev", "test"}
    assert dev == {u.id for u in corpus.choose(corpus.asterisk(), "dev")}  # the same split every time


@pytest.mark.parametrize(("text", "expected"), [
    ("Press 1, 2 or 3.", "press one two or three"),
    ("That's $5!", "that's five dollars"),
    ("the 21st of March", "the twenty first of march"),
    ("De-activated.", "de activated"),
    ("Mr. Dashwood", "mister dashwood"),
])
def test_wer_normalisation(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_repeat_detection() -> None:
    assert repeats("zero zero zero") and repeats("where with my order where with my order where with")
    assert repeats("1, 2, 3, 4, 5, 1, 2, 3") and repeats("yes please yes please yes please")
    assert not repeats("no, no, thank you") and not repeats("one two three four five")
    assert not repeats("thank you thank you") and not repeats("four four two one")


def test_whisper_base_is_assembled_checked_and_hears_a_prompt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              prompts: dict[str, corpus.Utterance]) -> None:
    from ivr.errors import ModelError
    from ivr.speech import models

    monkeypatch.setenv(models.MODELS_DIR_ENV, str(tmp_path / "models"))
    monkeypatch.setenv(models.CACHE_DIR_ENV, str(tmp_path / "cache"))
    assert "whisper-base" in [m.name for m in models.installed_models()]
    folder = models.whisper_model_dir("base")
    assert folder == tmp_path / "models" / "whisper-base"
    assert (folder / "model.bin").stat().st_size == models.WHISPER_BASE_SIZE
    base = load_engine("whisper", "base")
    heard = hear(base, prompts["vm-dialout"])
    assert normalize(heard.text) == "please wait while i connect your call", heard.text
    with (folder / "model.bin").open("r+b") as weights:  # a damaged copy is refused, not loaded
        weights.seek(1000)
        weights.write(b"\x00" * 16)
    with pytest.raises(ModelError, match="SHA-256"):
        models.whisper_model_dir("base")


def test_ivr_bench_wer_scores_real_speech(tmp_path: Path) -> None:
    from ivr.bench.wer import run_wer_bench

    report = run_wer_bench("dev", ("tiny.en",), ("asterisk",), limit=8)
    fast, stock = report["settings"]["tiny.en fast"], report["settings"]["tiny.en stock"]
    assert report["utterances"] == 8 and fast["utterances"] == stock["utterances"] == 8
    assert 0 <= fast["wer_percent"] < 50 and fast["repeats"] == 0
    assert fast["median_ms"] < stock["median_ms"]
    assert fast["wer_by_source_percent"] == {"asterisk": fast["wer_percent"]}
    low, high = report["tiny.en fast_minus_stock_95_percent_interval"]
    assert low <= report["tiny.en fast_minus_stock_wer_points"] <= high
    low, high = report["tiny.en fast_minus_stock_without_hesitations_95_percent_interval"]
    assert low <= report["tiny.en fast_minus_stock_without_hesitations_wer_points"] <= high
    assert fast["wer_without_hesitations_percent"] <= fast["wer_percent"] + 1e-9  # the prompts have no "uh"


def test_the_difference_interval_shows_what_is_noise() -> None:
    from ivr.bench.wer import SettingResult, paired_difference_interval

    def setting(hyps: list[str]) -> SettingResult:
        result = SettingResult("s")
        result.refs, result.hyps = ["press one to continue"] * len(hyps), hyps
        return result

    same = setting(["press one to continue", "press one to continue"] * 50)
    assert paired_difference_interval(same, same) == (0.0, 0.0)
    # One utterance in ten loses a word: about 2.5 points worse, and the interval excludes no difference.
    worse = setting(["press one to continue" if i % 10 else "press one continue" for i in range(100)])
    low, high = paired_difference_interval(worse, setting(["press one to continue"] * 100))
    assert 0 < low < 2.5 < high


def test_the_second_wer_leaves_hesitations_out_as_whispers_normalizer_does() -> None:
    from ivr.bench.wer import SettingResult

    result = SettingResult("fast")
    result.refs, result.hyps = ["uh um uh hm hm um", "um yes please"], ["uh uh uh uh uh uh uh uh", "yes police"]
    result.kinds, result.sources = ["sentence"] * 2, ["mfa"] * 2
    assert round(result.wer(), 4) == round(8 / 9, 4)  # every word counts: 6 errors, then 2
    plain = result.without_hesitations()
    assert plain.refs == ["hm hm", "yes please"] and plain.hyps == ["", "yes police"]
    assert plain.wer() == 3 / 4  # "hm" is not one of Whisper's hesitations: 2 deletions and 1 substitution
    assert result.refs[0] == "uh um uh hm hm um"  # the result itself is unchanged


def test_largest_differences_name_the_utterances_one_setting_loses() -> None:
    from ivr.bench.wer import SettingResult, largest_differences

    said = ["press one", "press two to continue", "goodbye"]
    fast, stock = SettingResult("fast"), SettingResult("stock")
    for result, hyps in ((fast, ["press one", "dress two to continue", "good bye"]), (stock, said)):
        result.ids, result.refs, result.hyps = ["a", "b", "c"], said, hyps
    worse = largest_differences(fast, stock)
    assert [(row["id"], row["more_errors"]) for row in worse] == [("c", 2), ("b", 1)]
    assert worse[0] == {"id": "c", "more_errors": 2, "said": "goodbye", "fast": "good bye", "stock": "goodbye"}
    assert largest_differences(stock, fast) == []


def test_redecode_sweep_scores_each_threshold_from_the_same_decodes() -> None:
    from ivr.bench.wer import run_redecode_sweep

    report = run_redecode_sweep("dev", "tiny.en", ("asterisk",), limit=4, thresholds=(0.0, 1.01))
    rules = report["rules"]
    never, always = rules["again when mean word probability < 0.0"], rules["again when mean word probability < 1.01"]
    assert report["utterances"] == 4 and never["decoded_twice_percent"] == 0 and always["decoded_twice_percent"] == 100
    assert never["wer_percent"] == rules["short window only"]["wer_percent"]
    assert always["median_ms"] > never["median_ms"]
    decodes = report["decodes"]  # kept to score other rules from the same run
    assert len(decodes) == 4 and all(
        d["short"][3] and all(0 <= p <= 1 for p in d["short"][3]) for d in decodes if d["short"][0])


def test_digit_strings_are_real_digits_spliced_and_split_for_good() -> None:
    import soundfile

    strings = corpus.digit_strings()
    assert len(strings) == corpus.DIGIT_STRINGS and strings == corpus.digit_strings()  # the same every run
    assert all(u.text.isdigit() and 1 <= len(u.text) <= 6 and u.kind == "digits" for u in strings)
    assert {len(u.text) for u in strings} == {1, 2, 3, 4, 5, 6} and {u.split for u in strings} == {"dev", "test"}
    for u in strings[:12]:
        info = soundfile.info(str(u.path))  # each digit a real clip of 0.3-0.8 s plus a pause of 0.15-0.4 s
        assert info.samplerate == 8000 and 0.45 + 0.45 * len(u.text) < info.duration < 0.45 + 1.2 * len(u.text)


def test_digit_strings_are_scored_as_the_digits_slot_reads_them() -> None:
    from ivr.bench.wer import digit_string_results, doubles_a_digit

    strings = list(corpus.choose(corpus.digit_strings(), "dev"))[:3]
    answers = {"right": iter([", ".join(u.text) + "." for u in strings]),
               "doubling": iter([u.text + u.text[-1] for u in strings]), "deaf": iter(["Bye."] * 3)}
    settings = {name: (lambda audio, said=said: next(said)) for name, said in answers.items()}
    report = digit_string_results(settings, strings)
    assert report["strings"] == 3 and report["right"]["exact_percent"] == 100.0
    assert report["doubling"]["exact_percent"] == 0.0 and report["doubling"]["a_digit_doubled"] == 3
    assert report["deaf"]["misses"][0] == {"said": strings[0].text, "heard": "Bye."}
    assert doubles_a_digit("7433", "743") and doubles_a_digit("7443", "743")
    assert not doubles_a_digit("7434", "743") and not doubles_a_digit("743", "743")


def test_ivr_bench_wer_reads_real_digit_strings_back() -> None:
    from ivr.bench.wer import run_wer_bench

    report = run_wer_bench("dev", ("tiny.en",), ("digits",), limit=6, line="mobile")
    assert "settings" not in report and report["digit_strings"]["strings"] == 6
    assert report["digit_strings"]["tiny.en fast"]["exact_percent"] >= 80, report["digit_strings"]


def test_resampled_line_audio_matches_a_calls_rate(prompts: dict[str, corpus.Utterance]) -> None:
    audio = corpus.line_audio(prompts["vm-dialout"])
    assert audio.dtype == np.float32 and np.abs(audio).max() <= 1.0
    assert len(resample(audio, 8000, 16000)) == pytest.approx(2 * len(audio), abs=2)


def test_the_full_window_second_pass_is_taken_only_on_a_quiet_server(whisper: AsrEngine,
                                                                      prompts: dict[str, corpus.Utterance],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from ivr.speech.asr.whisper_engine import WINDOW_SECONDS, Heard, WhisperEngine

    assert isinstance(whisper, WhisperEngine)
    windows: list[float] = []
    decode = whisper._decode

    def unsure(audio: np.ndarray, hint: str | None, window: float) -> Heard:
        windows.append(window)
        heard = decode(audio, hint, window)
        return Heard(heard.text, 0.1, heard.words)  # every result unsure: a second pass is wanted

    monkeypatch.setattr(whisper, "_decode", unsure)
    audio = resample(corpus.line_audio(prompts["vm-dialout"]), corpus.LINE_RATE, 16000)
    whisper.transcribe_audio(audio, hint=None)
    assert windows[1:] == [WINDOW_SECONDS]  # alone: the full window is tried
    windows.clear()
    whisper._in_flight += 1  # another caller's utterance is being recognised
    try:
        whisper.transcribe_audio(audio, hint=None)
    finally:
        whisper._in_flight -= 1
    assert len(windows) == 1 and windows[0] < WINDOW_SECONDS  # busy: the first pass stands


def test_a_second_pass_that_loops_where_the_first_did_not_is_not_taken(
        whisper: AsrEngine, prompts: dict[str, corpus.Utterance], monkeypatch: pytest.MonkeyPatch) -> None:
    from ivr.speech.asr.whisper_engine import WINDOW_SECONDS, Heard, WhisperEngine

    assert isinstance(whisper, WhisperEngine)
    passes: dict[str, tuple[str, str]] = {"loop": ("Date heave.", "8-8-8-8-8-8-8-8"),
                                          "both loop": ("Uh, uh, uh, uh.", "Uh uh uh uh, forced aligner.")}
    audio = resample(corpus.line_audio(prompts["digits/h-18"]), corpus.LINE_RATE, 16000)
    for case, (first, second) in passes.items():
        def decode(audio: np.ndarray, hint: str | None, window: float, first: str = first,
                   second: str = second) -> Heard:
            text = second if window == WINDOW_SECONDS else first
            return Heard.of(text, [Word(w, 0.2) for w in text.split()])  # unsure: a second pass is wanted

        monkeypatch.setattr(whisper, "_decode", decode)
        expected = first if case == "loop" else second
        assert whisper.transcribe_audio(audio, hint=None).text == expected, case


def test_base_does_not_loop_on_a_short_answer_over_a_mobile_line(prompts: dict[str, corpus.Utterance]) -> None:
    from ivr.nlu.garbled import looks_garbled

    base = load_engine("whisper", "base")  # its full window heard "8-8-8-8-8-8-8-8-8-8-8"
    heard = base.transcribe_audio(resample(corpus.line_audio(prompts["digits/h-18"], "mobile"),  # type: ignore[attr-defined]
                                           corpus.LINE_RATE, 16000), hint=None)
    assert heard.text and not looks_garbled(heard.text), heard.text


def test_a_long_utterance_on_a_quiet_server_takes_the_full_window_at_once(
        whisper: AsrEngine, prompts: dict[str, corpus.Utterance], monkeypatch: pytest.MonkeyPatch) -> None:
    from ivr.speech.asr.whisper_engine import FULL_WINDOW_FROM_SECONDS, WINDOW_SECONDS, Heard, WhisperEngine

    assert isinstance(whisper, WhisperEngine)
    windows: list[float] = []
    decode = whisper._decode

    def recorded(audio: np.ndarray, hint: str | None, window: float) -> Heard:
        windows.append(window)
        return decode(audio, hint, window)

    monkeypatch.setattr(whisper, "_decode", recorded)
    audio = resample(corpus.line_audio(prompts["screen-callee-options"]), corpus.LINE_RATE, 16000)
    assert len(audio) / 16000 > FULL_WINDOW_FROM_SECONDS
    heard = whisper.transcribe_audio(audio, hint=None)
    assert windows == [WINDOW_SECONDS] and normalize(heard.text).endswith("a polite don't call menu")
    windows.clear()
    whisper._in_flight += 1  # busy: the cheaper short window, with the whole decoding budget
    try:
        heard = whisper.transcribe_audio(audio, hint=None)
    finally:
        whisper._in_flight -= 1
    assert len(windows) == 1 and windows[0] < WINDOW_SECONDS
    assert normalize(heard.text).endswith("a polite don't call menu"), heard.text


@pytest.mark.parametrize(("prompt", "ending"), [("demo-echotest", "pressing the pound key"),
                                                ("screen-callee-options", "a polite don't call menu")])
def test_a_long_prompt_keeps_its_last_words(whisper: AsrEngine, prompts: dict[str, corpus.Utterance],
                                            prompt: str, ending: str) -> None:
    # 18–22 s of speech: CTranslate2 decodes only half of the max_length it is given, which cut these off.
    heard = hear(whisper, prompts[prompt])
    assert normalize(heard.text).endswith(normalize(ending)), heard.text
    # Word times reach the end of the audio (they stopped at half the window when align was given half
    # the frames: every word after 11.5 s was placed at 11.5 s).
    seconds = len(corpus.line_audio(prompts[prompt])) / corpus.LINE_RATE
    ends = [w.end for w in heard.words]
    assert ends == sorted(ends) and ends[-1] > seconds - 2.0, (seconds, heard.words[-4:])


def test_words_after_where_the_model_stopped_are_heard(whisper: AsrEngine,
                                                       prompts: dict[str, corpus.Utterance]) -> None:
    # conf-usermenu, 14 s: in the short window the model ends its transcript at 12 s ("… your volume"),
    # before "or 8 to exit". The rest is decoded on its own, as stock transcribe() seeks on, and appended once.
    audio = resample(corpus.line_audio(prompts["conf-usermenu"]), corpus.LINE_RATE, 16000)
    heard = whisper.transcribe_audio(audio, hint=None)  # type: ignore[attr-defined]
    said = normalize(heard.text)
    assert said.endswith("your volume or eight to exit") and said.count("eight to exit") == 1, heard.text
    assert heard.words[-1].text == "exit." and 13.0 < heard.words[-1].end <= 14.1, heard.words[-3:]


def test_only_sound_after_the_transcript_is_decoded_again() -> None:
    from ivr.speech.asr.whisper_engine import WHISPER_RATE, has_sound_after

    rng = np.random.default_rng(7)
    speech = 0.3 * np.sin(np.arange(2 * WHISPER_RATE) * 2 * np.pi * 220 / WHISPER_RATE).astype(np.float32)
    line_noise = (0.003 * rng.standard_normal(2 * WHISPER_RATE)).astype(np.float32)  # -40 dB
    assert not has_sound_after(np.concatenate([speech, line_noise]), line_noise)
    later_words = np.concatenate([line_noise[: WHISPER_RATE // 2], 0.5 * speech[: WHISPER_RATE]])
    assert has_sound_after(np.concatenate([speech, later_words]), later_words)
    assert not has_sound_after(np.concatenate([speech, later_words[-8000:]]), later_words[-8000:])  # < 1 s


def test_the_decoding_budget_survives_ctranslate2s_halving() -> None:
    from ivr.speech.asr.whisper_engine import MAX_NEW_TOKENS, TEXT_CONTEXT, TOKENS_PER_SECOND, generation_length

    for prompt in (1, 4, 60, 205):
        for seconds in (0.5, 3.0, 12.0, 25.0):
            budget = min(MAX_NEW_TOKENS, int(seconds * TOKENS_PER_SECOND) + 16)
            total = generation_length(prompt, seconds)
            # What CTranslate2 lets Whisper decode after the prompt (whisper.cc):
            assert min(total // 2, total - prompt) >= budget and total <= TEXT_CONTEXT


def test_a_bench_run_samples_the_same_way_each_time() -> None:
    """Stock transcribe()'s temperature fallback samples: seeded, two runs of the bench give the same text."""
    import subprocess
    import sys

    script = (
        "import numpy as np\n"
        "from ivr.bench import corpus\n"
        "from ivr.audio.wavfile import resample\n"
        "from ivr.bench.wer import bench_engine\n"
        "utterance = next(u for u in corpus.load(('asterisk',)) if u.kind == 'sentence')\n"
        "audio = resample(corpus.line_audio(utterance, 'mobile'), corpus.LINE_RATE, 16000)\n"
        "segments, _ = bench_engine('tiny.en').whisper.transcribe(audio, language='en', temperature=1.0)\n"
        "print(' '.join(s.text for s in segments))\n"
    )
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
            for _ in range(2)]
    assert runs[0].stdout.strip() and runs[0].stdout == runs[1].stdout
