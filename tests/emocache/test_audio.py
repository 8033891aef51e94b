"""Audio: soundfile decode, PyAV fallback for containers, 1-based channels, soxr resampling, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.audio import tone, write_mp4, write_wav
from emocache.audio import AudioError, AudioInfo, load, probe, read


def dominant_hz(w: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(w * np.hanning(w.size)))
    return float(np.fft.rfftfreq(w.size, 1 / sr)[spec.argmax()])


def test_wav_read_is_float32_and_exact(tmp_path):
    x = tone(0.5, channels=2)
    p = write_wav(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
    y, sr = read(p)
    assert sr == 16000 and y.dtype == np.float32 and y.shape == (8000, 2)
    np.testing.assert_array_equal(y, x)
    assert probe(p) == AudioInfo(16000, 8000, 2)


def test_channel_select_is_one_based(tmp_path):
    x = tone(0.5, channels=3)  # channel c holds 220 * c Hz
    p = write_wav(tmp_path / "three.wav", x, 16000, subtype="FLOAT")
    for c in (1, 2, 3):
        w = load(p, channel=c, target_sr=16000)
        assert w.dtype == np.float32 and w.ndim == 1
        np.testing.assert_array_equal(w, x[:, c - 1])
    with pytest.raises(AudioError, match=r"channel 4 requested but the file has 3 channel\(s\).*1-based"):
        load(p, channel=4)
    with pytest.raises(AudioError, match="channel 0"):
        load(p, channel=0)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resample_to_target_rate(tmp_path, sr):
    p = write_wav(tmp_path / "a.wav", tone(1.0, sr=sr, freq=440.0), sr, subtype="FLOAT")
    w = load(p, target_sr=16000)
    assert w.dtype == np.float32
    assert abs(w.size - 16000) <= 1
    assert dominant_hz(w, 16000) == pytest.approx(440.0, abs=2.0)
    assert np.abs(w[1000:-1000]).max() == pytest.approx(0.3, abs=0.01)  # soxr HQ keeps the amplitude
    # target_sr=None keeps the file's rate
    assert load(p, target_sr=None).size == sr


@pytest.mark.parametrize("codec, ext", [("aac", "m4a"), ("flac", "mp4")])
def test_pyav_fallback_for_containers_with_channel_select(tmp_path, codec, ext):
    import soundfile as sf

    x = tone(1.0, sr=16000, channels=2)  # ch1 220 Hz, ch2 440 Hz
    p = write_mp4(tmp_path / f"a.{ext}", x, 16000, codec=codec)
    with pytest.raises(Exception):
        sf.info(str(p))  # soundfile cannot read it: the PyAV path is what is tested
    info = probe(p)
    assert info.sample_rate == 16000 and info.channels == 2
    assert abs(info.frames - 16000) <= 1  # from the container's duration, without decoding
    y, sr = read(p)
    assert y.dtype == np.float32 and y.shape[1] == 2 and 16000 <= y.shape[0] <= 16000 + 2048  # AAC pads
    w1, w2 = load(p, channel=1), load(p, channel=2)
    assert dominant_hz(w1, 16000) == pytest.approx(220.0, abs=2.0)
    assert dominant_hz(w2, 16000) == pytest.approx(440.0, abs=2.0)
    if codec == "flac":  # lossless: samples match the 16-bit quantised input
        np.testing.assert_allclose(y, x, atol=1.0 / 32767 + 1e-6)
    with pytest.raises(AudioError, match="channel 3 requested"):
        load(p, channel=3)
    w8 = load(p, channel=2, target_sr=8000)
    assert abs(w8.size - y.shape[0] / 2) <= 1 and dominant_hz(w8, 8000) == pytest.approx(440.0, abs=2.0)


def test_integer_pcm_scaled_to_unit_range(tmp_path):
    from emocache.audio import _to_float

    assert _to_float(np.array([-32768, 0, 32767], np.int16)).tolist() == pytest.approx([-1.0, 0.0, 32767 / 32768])
    assert _to_float(np.array([0, 128, 255], np.uint8)).tolist() == pytest.approx([-1.0, 0.0, 127 / 128])
    p = write_wav(tmp_path / "u8.wav", np.array([0.0, 0.5, -0.5], np.float32), 16000, subtype="PCM_U8")
    y, _ = read(p)
    np.testing.assert_allclose(y[:, 0], [0.0, 0.5, -0.5], atol=1 / 128)


def test_missing_empty_and_non_audio_files(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: file not found.*--audio-root"):
        load(tmp_path / "nope.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav: file is empty"):
        load(tmp_path / "empty.wav")
    (tmp_path / "text.wav").write_text("this is not audio at all\n" * 20)
    with pytest.raises(AudioError, match=r"text\.wav: not a readable audio file"):
        load(tmp_path / "text.wav")
    with pytest.raises(AudioError, match=r"text\.wav: not a readable audio file"):
        probe(tmp_path / "text.wav")
    good = write_wav(tmp_path / "good.wav", tone(1.0), 16000)
    (tmp_path / "trunc.wav").write_bytes(good.read_bytes()[:30])  # header cut mid-way
    with pytest.raises(AudioError):
        load(tmp_path / "trunc.wav")


def test_zero_sample_file_is_an_error(tmp_path):
    p = write_wav(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="no samples"):
        load(p)


def test_probe_of_a_long_container_does_not_decode(tmp_path, monkeypatch):
    import emocache.audio as audio

    p = write_mp4(tmp_path / "long.m4a", tone(20.0, sr=8000), 8000, codec="aac")

    def no_decode(path):
        raise AssertionError("probe decoded the file")

    monkeypatch.setattr(audio, "_decode_av", no_decode)
    assert probe(p) == AudioInfo(8000, 160000, 1)


@pytest.mark.timeout(60)
def test_m4a_gives_the_wavs_sample_count(tmp_path):
    """AAC priming and the last frame's padding are trimmed: the m4a decodes to the wav's length, aligned."""
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=int(1.3 * 16000))).astype(np.float32)
    x = (0.5 * x / np.abs(x).max()).astype(np.float32)  # a random walk: no period, so alignment is testable
    wav = write_wav(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
    m4a = write_mp4(tmp_path / "a.m4a", x, 16000, codec="aac")
    w, m = load(wav), load(m4a)
    assert m.size == w.size == x.shape[0]
    assert np.corrcoef(m, w)[0, 1] > 0.95  # aligned: no priming left at the start
    assert np.corrcoef(m[1024:], w[:-1024])[0, 1] < 0.9


def _no_editlist_m4a(path, x, sr):
    """An AAC m4a written without an edit list (the priming samples are in the stream, unmarked)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=sr, layout="mono")
        frame = av.AudioFrame.from_ndarray(x[None, :], format="fltp", layout="mono")
        frame.sample_rate = sr
        for p in [*s.encode(frame), *s.encode(None)]:
            c.mux(p)
    return path


@pytest.mark.timeout(60)
def test_m4a_without_edit_list_is_trimmed_too(tmp_path):
    x = tone(2.0, sr=16000)
    m = load(_no_editlist_m4a(tmp_path / "b.m4a", x, 16000))
    assert m.size == x.shape[0]


@pytest.mark.timeout(60)
def test_decoding_stops_at_max_seconds_by_decoded_samples(tmp_path, monkeypatch):
    """The limit counts decoded samples; a header that claims less (here: none at all) does not let a file in."""
    import emocache.audio as audio

    p = write_mp4(tmp_path / "long.m4a", tone(20.0, sr=8000), 8000, codec="aac")
    monkeypatch.setattr(audio, "_declared_seconds", lambda stream: 1.0)  # the header lies: 1 s
    with pytest.raises(AudioError, match=r"over 5 s of audio decoded \(the header claims 1.0 s\).*--max-audio-seconds"):
        load(p, max_seconds=5)
    assert 160000 <= load(p, max_seconds=30, target_sr=None).size <= 160000 + 2048  # never cut to the lie
    wav = write_wav(tmp_path / "long.wav", tone(20.0, sr=8000), 8000)
    with pytest.raises(AudioError, match="--max-audio-seconds 5"):
        load(wav, max_seconds=5)


def test_absurd_sample_rate_and_fifo(tmp_path):
    import os

    p = write_wav(tmp_path / "a.wav", tone(0.5), 16000)
    data = bytearray(p.read_bytes())
    data[24:28] = (2**31 - 1).to_bytes(4, "little")  # the fmt chunk's sample rate
    p.write_bytes(bytes(data))
    with pytest.raises(AudioError, match=r"sample rate 2147483647 Hz is outside"):
        load(p)
    with pytest.raises(AudioError, match=r"sample rate 2147483647 Hz is outside"):
        probe(p)
    os.mkfifo(tmp_path / "fifo.wav")
    with pytest.raises(AudioError, match="not a regular file"):
        load(tmp_path / "fifo.wav")
