"""Manifests: EmoBox jsonl, folds, --audio-root, label maps, building from a folder, error messages."""

from __future__ import annotations

import json

import pytest

from tests.helpers.audio import emobox_line, tone, write_jsonl, write_wav
from emocache.manifest import (ManifestError, Utterance, build_manifest, load_label_map, lookup_label,
                               parse_audio_root, read_folds, read_manifest, read_manifests, remap, six_class_map,
                               utterances_sha256, write_manifest)


def test_reads_every_emobox_field(tmp_path):
    p = write_jsonl(tmp_path / "urdu.jsonl", [
        emobox_line("urdu-a", "downloads/urdu/Angry/a.wav", "A", dataset="urdu", sr=44100, n=132456, channel=2),
        emobox_line("urdu-b", "downloads/urdu/Neutral/b.wav", "N", dataset="urdu", sr=44100, n=44100),
    ])
    u = read_manifest(p)
    assert [x.key for x in u] == ["urdu-a", "urdu-b"]
    a = u[0]
    assert (a.dataset, a.emo, a.channel, a.sample_rate, a.num_frame) == ("urdu", "A", 2, 44100, 132456)
    assert a.length == pytest.approx(132456 / 44100)
    assert a.wav == "downloads/urdu/Angry/a.wav"
    assert u[1].channel == 1


def test_channel_defaults_to_one_and_num_frame_may_be_float(tmp_path):
    p = write_jsonl(tmp_path / "x.jsonl", [{"key": "k", "wav": "a.wav", "emo": "hap", "num_frame": "1600.0"}])
    (u,) = read_manifest(p)
    assert u.channel == 1 and u.num_frame == 1600 and u.sample_rate is None and u.length is None


def test_audio_root_longest_prefix_wins(tmp_path):
    roots = parse_audio_root(["downloads=/a", "downloads/urdu=/data/urdu/"])
    assert roots[0] == ("downloads/urdu", "/data/urdu")
    assert remap("downloads/urdu/Angry/x.wav", roots) == "/data/urdu/Angry/x.wav"
    assert remap("downloads/emodb/x.wav", roots) == "/a/emodb/x.wav"
    # a prefix matches whole path components only
    assert remap("downloads/urdu2/x.wav", [("downloads/urdu", "/d")]) == "downloads/urdu2/x.wav"
    with pytest.raises(ManifestError, match="PREFIX=DIR"):
        parse_audio_root(["no-equals-sign"])


def test_read_manifest_applies_audio_root(tmp_path):
    p = write_jsonl(tmp_path / "urdu.jsonl", [emobox_line("k1", "downloads/urdu/Angry/a.wav", "A")])
    (u,) = read_manifest(p, audio_root=["downloads/urdu=/some/dir"])
    assert u.wav == "/some/dir/Angry/a.wav"


@pytest.mark.parametrize("line2, match", [
    ({"key": "k1", "wav": "b.wav", "emo": "A"}, r"x\.jsonl:2: duplicate key 'k1' \(first on line 1\).*rename or drop"),
    ({"key": "k2", "wav": "b.wav"}, r"x\.jsonl:2: missing field\(s\) emo"),
    ({"key": "k2", "wav": "b.wav", "emo": "A", "channel": 0}, r"x\.jsonl:2: channel 0 is out of range.*1-based"),
    ({"key": "k2", "wav": "b.wav", "emo": "A", "channel": "left"}, r"x\.jsonl:2: channel 'left' is not an integer"),
    ("not json {", r"x\.jsonl:2: not valid JSON"),
    ({"key": "k2", "wav": "b.wav", "emo": "A", "num_frame": "n/a"}, r"x\.jsonl:2: sample_rate, num_frame and length must"),
    ({"key": "k2", "wav": "b.wav", "emo": "A", "length": [3]}, r"x\.jsonl:2: sample_rate, num_frame and length must"),
    ([1, 2], r"x\.jsonl:2: expected a JSON object"),
])
def test_bad_lines_name_the_line_and_the_fix(tmp_path, line2, match):
    p = tmp_path / "x.jsonl"
    second = line2 if isinstance(line2, str) else json.dumps(line2)
    p.write_text(json.dumps({"key": "k1", "wav": "a.wav", "emo": "A"}) + "\n" + second + "\n")
    with pytest.raises(ManifestError, match=match):
        read_manifest(p)


def test_unknown_label_names_line_and_known_labels(tmp_path):
    p = write_jsonl(tmp_path / "x.jsonl", [emobox_line("k1", "a.wav", "neutral"), emobox_line("k2", "b.wav", "bored")])
    with pytest.raises(ManifestError, match=r"x\.jsonl:2: label 'bored' is not in the label map "
                                            r"\(known: Angry, Neutral\); add it to label_map.json"):
        read_manifest(p, label_map={"Neutral": "Neutral", "Angry": "Angry"})


def test_empty_manifest_is_an_error(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text("\n\n")
    with pytest.raises(ManifestError, match="no utterances"):
        read_manifest(p)


def test_label_map_case_insensitive_fallback(demo_corpus):
    m = load_label_map(demo_corpus.ds_dir)
    assert m["neu"] == "Neutral" and len(m) == 6
    assert lookup_label("ang", m) == "Angry"
    assert lookup_label("ANG", m) == "Angry"
    assert lookup_label("xyz", m) is None
    assert lookup_label("neutral", {"Neutral": "Neutral"}) == "Neutral"
    assert lookup_label("Neutral", {"neutral": "Calm", "Neutral": "Neutral"}) == "Neutral"  # exact wins


def test_six_class_map():
    m = six_class_map()
    assert set(m.values()) == {"Neutral", "Angry", "Surprise", "Sad", "Happy", "Fear"}
    assert not any(k.startswith("_") for k in m)
    assert m["Calm"] == "Neutral" and m["Excited"] == "Happy" and m["Frustrated"] == "Angry"
    assert "Disgust" not in m and "Contempt" not in m


def test_whole_dataset_and_folds(demo_corpus):
    utts = read_manifest(demo_corpus.manifest, audio_root=[demo_corpus.audio_root])
    assert len(utts) == 36
    assert all(u.wav.startswith(str(demo_corpus.ds_dir) + "/audio/") for u in utts)
    by_ds = read_manifests([demo_corpus.ds_dir], [demo_corpus.audio_root])  # a folder means <ds>/<ds>.jsonl
    assert list(by_ds) == ["demo"] and [u.key for u in by_ds["demo"]] == [u.key for u in utts]

    folds = read_folds(demo_corpus.ds_dir)
    assert [f.k for f in folds] == [1, 2, 3]
    all_keys = {u.key for u in utts}
    tests = [set(f.test) for f in folds]
    assert set().union(*tests) == all_keys and sum(len(t) for t in tests) == 36  # test splits partition
    for f in folds:
        assert len(f.train) == 24 and len(f.test) == 12 and f.valid == ()
        assert not set(f.train) & set(f.test)
        spk = {k.split("-")[1] for k in f.test}
        assert len(spk) == 2 and not spk & {k.split("-")[1] for k in f.train}  # speaker independent


def test_fold_files_as_manifests_and_valid_split(tmp_path):
    ds = tmp_path / "toy"
    write_jsonl(ds / "fold_1" / "toy_train_fold_1.jsonl", [emobox_line("a", "a.wav", "A"), emobox_line("b", "b.wav", "B")])
    write_jsonl(ds / "fold_1" / "toy_valid_fold_1.jsonl", [emobox_line("c", "c.wav", "A")])
    write_jsonl(ds / "fold_1" / "toy_test_fold_1.jsonl", [emobox_line("d", "d.wav", "B")])
    (f,) = read_folds(ds)
    assert (f.train, f.valid, f.test) == (("a", "b"), ("c",), ("d",))
    # fold files passed as manifests group by the dataset field
    by_ds = read_manifests(sorted((ds / "fold_1").glob("*.jsonl")))
    assert sorted(u.key for u in by_ds["toy"]) == ["a", "b", "c", "d"]
    # a folder without <ds>.jsonl says to pass fold files
    with pytest.raises(ManifestError, match="pass the fold files"):
        read_manifests([ds])


def test_folds_without_test_split_or_folders(tmp_path):
    with pytest.raises(ManifestError, match="no fold_<k> folders"):
        read_folds(tmp_path)
    write_jsonl(tmp_path / "fold_1" / "t_train_fold_1.jsonl", [emobox_line("a", "a.wav", "A")])
    with pytest.raises(ManifestError, match="test split"):
        read_folds(tmp_path)


def test_same_key_in_two_files_is_refused(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [emobox_line("k", "a.wav", "A", dataset="d")])
    b = write_jsonl(tmp_path / "b.jsonl", [emobox_line("k", "b.wav", "A", dataset="d")])
    with pytest.raises(ManifestError, match=r"key 'k' also appears in .*a\.jsonl"):
        read_manifests([a, b])


def test_manifest_identity_tracks_content():
    u = [Utterance("k", "a.wav", "A"), Utterance("j", "b.wav", "B")]
    assert utterances_sha256(u) == utterances_sha256(list(u))
    assert utterances_sha256(u) != utterances_sha256(u[::-1])
    assert utterances_sha256(u) != utterances_sha256([Utterance("k", "a.wav", "B"), u[1]])


def test_build_manifest_from_pattern_roundtrips(tmp_path):
    write_wav(tmp_path / "audio" / "angry" / "s1.wav", tone(0.5), 16000)
    write_wav(tmp_path / "audio" / "sad" / "s2.wav", tone(1.0, sr=8000), 8000)
    write_wav(tmp_path / "audio" / "sad" / "s3.flac", tone(0.25, sr=22050, channels=2), 22050)
    (tmp_path / "audio" / "readme.txt").write_text("not audio")
    utts = build_manifest(tmp_path / "audio", "toy", pattern=r"(?P<emo>[^/]+)/")
    assert [(u.key, u.emo) for u in utts] == [("toy-angry_s1", "angry"), ("toy-sad_s2", "sad"), ("toy-sad_s3", "sad")]
    assert [(u.sample_rate, u.num_frame) for u in utts] == [(16000, 8000), (8000, 8000), (22050, 5512)]
    assert utts[1].length == pytest.approx(1.0)
    out = tmp_path / "m" / "toy.jsonl"
    write_manifest(utts, out)
    line = json.loads(out.read_text().splitlines()[0])
    assert {"key", "dataset", "wav", "sample_rate", "num_frame", "length", "emo", "channel", "type", "task"} <= set(line)
    assert read_manifest(out) == utts


def test_build_manifest_from_csv(tmp_path):
    write_wav(tmp_path / "a" / "x1.wav", tone(0.5))
    write_wav(tmp_path / "a" / "sub" / "x2.wav", tone(0.5))
    csv = tmp_path / "labels.csv"
    csv.write_text("file,emo\nx1,hap\nsub/x2.wav,neu\n")  # by stem or by relative path
    utts = build_manifest(tmp_path / "a", "t", labels_csv=csv)
    assert [(u.key, u.emo) for u in utts] == [("t-sub_x2", "neu"), ("t-x1", "hap")]
    csv.write_text("file,emo\nx1,hap\n")
    with pytest.raises(ManifestError, match=r"sub/x2\.wav: no row in .*labels\.csv"):
        build_manifest(tmp_path / "a", "t", labels_csv=csv)
    csv.write_text("name,label\nx1,hap\n")
    with pytest.raises(ManifestError, match="columns 'file' and 'emo'"):
        build_manifest(tmp_path / "a", "t", labels_csv=csv)


def test_build_manifest_argument_errors(tmp_path):
    write_wav(tmp_path / "a" / "x1.wav", tone(0.5))
    with pytest.raises(ManifestError, match="exactly one of"):
        build_manifest(tmp_path / "a", "t")
    with pytest.raises(ManifestError, match="named group"):
        build_manifest(tmp_path / "a", "t", pattern=r"(\w+)")
    with pytest.raises(ManifestError, match="does not match --pattern"):
        build_manifest(tmp_path / "a", "t", pattern=r"(?P<emo>zzz)")
    with pytest.raises(ManifestError, match="no audio files"):
        build_manifest(tmp_path / "empty_does_not_exist", "t", pattern=r"(?P<emo>.)")


def test_build_manifest_refuses_colliding_keys(tmp_path):
    write_wav(tmp_path / "a" / "x" / "y.wav", tone(0.1))
    write_wav(tmp_path / "a" / "x_y.flac", tone(0.1))
    with pytest.raises(ManifestError, match=r"x_y\.flac and x/y\.wav both make the key 'd-x_y'; rename"):
        build_manifest(tmp_path / "a", "d", pattern=r"(?P<emo>x)")
