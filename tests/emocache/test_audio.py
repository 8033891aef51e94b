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
