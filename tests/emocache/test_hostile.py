"""Hostile and damaged stores and inputs: each case ends in a one-line error or the documented behaviour,
never an escape from the store root, a silent zero, a hang or unbounded memory (docs/STORE.md, threat model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from emocache.manifest import ManifestError, check_name, read_manifests
from emocache.share import merge, pack
from emocache.store import StoreError, open_store, write_arrays
from emocache.verify import verify_entry
from tests.helpers.store import edit

pytestmark = pytest.mark.timeout(60)
ENTRY = ("m", "ds")
N, BS = 12, 4


def make(path: Path, n: int = N) -> Path:
    rng = np.random.default_rng(0)
    frames = [rng.normal(size=(int(rng.integers(2, 6)), 3)).astype(np.float32) for _ in range(n)]
    write_arrays(path, *ENTRY, [f"k{i}" for i in range(n)], [f"l{i % 2}" for i in range(n)],
                 np.stack([f.mean(0) for f in frames]), frames, block_size=BS)
    return path


def node(url: Path, *parts: str) -> Path:
    return url.joinpath(*ENTRY, *parts)


def zstd_bomb(size: int) -> bytes:
    """A valid zstd frame of RLE blocks that inflates to ``size`` zero bytes (64 KiB per 2 GiB)."""
    out = bytearray(b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + size.to_bytes(8, "little"))
    left = size
    while left:
        n = min(left, 1 << 17)
        left -= n
        out += ((n << 3) | (1 << 1) | (left == 0)).to_bytes(3, "little") + b"\x00"
    return bytes(out)


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


# -- the table: (name, damage(url, tmp_path), action(url), expected error) -----------------------------------------
def _swap(path: Path, make) -> None:
    """Remove the file at ``path`` and let ``make(path)`` put something else there."""
    path.unlink()
    make(path)


def _symlink_chunk(url, tmp):
    secret = tmp / "secret.txt"
    secret.write_text("root:x:0:0")
    _swap(node(url, "pooled", "c", "0", "0"), lambda c: c.symlink_to(secret))


def _symlink_root_json(url, tmp):
    (url / "zarr.json").unlink()
    (url / "zarr.json").symlink_to("/dev/zero")


def _fifo_chunk(url, tmp):
    _swap(node(url, "pooled", "c", "1", "0"), os.mkfifo)


def _fifo_frames(url, tmp):
    _swap(node(url, "blocks", "b000001", "frames", "c", "0", "0"), os.mkfifo)


def _delete_pooled(url, tmp):
    node(url, "pooled", "c", "1", "0").unlink()


def _delete_frames(url, tmp):
    node(url, "blocks", "b000002", "frames", "c", "0", "0").unlink()


def _delete_keys(url, tmp):
    node(url, "keys", "c", "0").unlink()


def _zstd_bomb_pooled(url, tmp):
    node(url, "pooled", "c", "0", "0").write_bytes(zstd_bomb(1 << 31) + b"\0\0\0\0")


def _zstd_bomb_index(url, tmp):
    node(url, "index", "c", "0", "0").write_bytes(zstd_bomb(1 << 31) + b"\0\0\0\0")


def _json_padding(url, tmp):
    p = node(url, "zarr.json")
    with open(p, "r+b") as f:  # a sparse 1 GiB file: valid JSON followed by padding
        f.truncate(1 << 30)


def _json_deep(url, tmp):
    edit(node(url, "zarr.json"), lambda m: m["attributes"].__setitem__("x", json.loads("[" * 200 + "]" * 200)))


def _json_very_deep(url, tmp):
    p = node(url, "zarr.json")
    p.write_text(p.read_text()[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")


def _format_string(url, tmp):
    edit(url / "zarr.json", lambda m: m["attributes"].__setitem__("emocache_format", "1"))


def _rows(url, tmp):
    def f(m):
        m["attributes"]["n"] = 1 << 31
    edit(node(url, "zarr.json"), f)
    for a in ("keys", "labels"):
        edit(node(url, a, "zarr.json"), lambda m: m.update(shape=[1 << 31]))
    for a, d in (("pooled", 3), ("index", 2)):
        edit(node(url, a, "zarr.json"), lambda m, d=d: m.update(shape=[1 << 31, d]))


def _huge_chunks(url, tmp):
    edit(node(url, "pooled", "zarr.json"),
         lambda m: m["chunk_grid"]["configuration"].__setitem__("chunk_shape", [1 << 28, 3]))


def _corrupt_pooled(url, tmp):
    c = node(url, "pooled", "c", "1", "0")
    data = bytearray(c.read_bytes())
    data[len(data) // 2] ^= 0x55
    c.write_bytes(bytes(data))


def _set_index(url, row, rows):
    open_store(url, mode="a").entry(*ENTRY).index_array[row:row + len(rows)] = np.array(rows)


def _open(url):
    return open_store(url)


def _pooled(url):
    return open_store(url).pooled(*ENTRY)


def _frames(url):
    return list(open_store(url).iter_frames(*ENTRY))


def _info(url):
    from emocache.store import describe

    return describe(open_store(url))


CASES = [
    ("symlinked chunk (read outside the store)", _symlink_chunk, _pooled, "symbolic link inside the store"),
    ("symlinked chunk (pack)", _symlink_chunk, "pack", "symbolic link inside the store"),
    ("zarr.json -> /dev/zero", _symlink_root_json, _open, "symbolic link inside the store"),
    ("FIFO chunk: pooled", _fifo_chunk, _pooled, "FIFO inside the store"),
    ("FIFO chunk: info", _fifo_chunk, _info, None),
    ("FIFO chunk: merge", _fifo_chunk, "merge", "FIFO inside the store"),
    ("FIFO chunk: pack", _fifo_chunk, "pack", "FIFO inside the store"),
    ("FIFO frames chunk: iter_frames", _fifo_frames, _frames, "FIFO inside the store"),
    ("deleted pooled chunk: pooled", _delete_pooled, _pooled, r"pooled: chunk\(s\) \['c/1/0'\] missing"),
    ("deleted pooled chunk: merge", _delete_pooled, "merge", r"pooled: chunk\(s\) \['c/1/0'\] missing"),
    ("overlapping index rows: merge", lambda url, tmp: _set_index(url, 0, [[0, 3], [1, 3]]), "merge",
     "block 0: index rows overlap"),
    ("index rows overflowing int64: merge", lambda url, tmp: _set_index(url, 4, [[1 << 62, 1 << 62]]), "merge",
     "block 1: index rows overflow int64"),
    ("deleted frames chunk", _delete_frames, _frames, "frames: chunk.* missing"),
    ("deleted keys chunk", _delete_keys, _pooled, r"keys: chunk\(s\) \['c/0'\] missing"),
    ("zstd bomb in pooled", _zstd_bomb_pooled, _pooled, "inflates to 2147483648 bytes, more than the 48 its array"),
    ("zstd bomb in index", _zstd_bomb_index, _pooled, "index.*more than the 64"),
    ("1 GiB of JSON padding", _json_padding, _open_entry := (lambda url: open_store(url).entry(*ENTRY)),
     "metadata document of 1073741824 bytes"),
    ("JSON nested 200 deep", _json_deep, _open_entry, "nested 202 levels deep, over the limit of 64"),
    ("JSON nested 100000 deep", _json_very_deep, _open_entry, "nested too deeply to parse"),
    ("format '1' as a string", _format_string, _open, "store format '1' is a string"),
    ("n = 2^31 rows", _rows, _open_entry, "n=2147483648 utterances, over the limit"),
    ("declared chunk of 3 GiB", _huge_chunks, _open_entry, "chunks of 3221225472 bytes, over the limit"),
    ("corrupt chunk names store and array", _corrupt_pooled, _pooled, r"/s/m/ds/pooled: unreadable"),
]


@pytest.mark.parametrize("name,damage,action,match", CASES, ids=[c[0] for c in CASES])
def test_hostile_store(tmp_path, name, damage, action, match):
    url = make(tmp_path / "s")
    damage(url, tmp_path)
    if action == "pack":
        fn = lambda: pack(str(url), tmp_path / "out.zip")  # noqa: E731
    elif action == "merge":
        fn = lambda: merge(str(url), str(tmp_path / "dst"))  # noqa: E731
    else:
        fn = lambda: action(url)  # noqa: E731
    if match is None:  # documented behaviour: info lists the entry without reading chunk data
        fn()
        return
    with pytest.raises(StoreError, match=match) as e:
        fn()
    one_line(e.value)
    assert not list(tmp_path.glob(".out.zip.*.partial")), "pack left its partial file"


def test_verify_names_every_damage(tmp_path):
    """verify agrees with the readers: missing, FIFO, bomb and impossible index rows are problems, not ok."""
    url = make(tmp_path / "s", n=24)
    _fifo_chunk(url, tmp_path)  # block 1
    node(url, "pooled", "c", "2", "0").unlink()  # block 2
    node(url, "index", "c", "3", "0").write_bytes(zstd_bomb(1 << 31))  # block 3
    e = open_store(url, mode="a").entry(*ENTRY)
    e.index_array[16:18] = np.array([[1 << 62, 1 << 62], [0, 1]])  # block 4: overflow
    e.index_array[20:22] = np.array([[0, 3], [1, 3]])  # block 5: overlap
    chk = verify_entry(open_store(url).entry(*ENTRY))
    assert chk.bad_blocks == [1, 2, 3, 4, 5], chk.problems
    assert "FIFO" in chk.problems[1] and "pooled chunk missing" in chk.problems[2]
    assert "more than the 64" in chk.problems[3]
    assert "overflow int64" in chk.problems[4] and "overlap" in chk.problems[5]


def test_verify_keys_duplicates_truncation_and_partial(tmp_path, cli):
    url = make(tmp_path / "s")
    e = open_store(url, mode="a").entry(*ENTRY)
    e.keys_array[:] = np.array(["k0"] * N, dtype=object)
    chk = verify_entry(open_store(url).entry(*ENTRY))
    assert not chk.ok and "duplicate key" in chk.entry_problems[0]
    code, out = cli("verify", url)
    assert code == 1 and "duplicate key" in out

    url2 = make(tmp_path / "t")
    kc = node(url2, "keys", "c", "0")
    kc.write_bytes(kc.read_bytes()[:-7])  # truncated
    chk = verify_entry(open_store(url2).entry(*ENTRY))
    assert not chk.ok and "keys: unreadable" in chk.entry_problems[0]

    url3 = make(tmp_path / "u")
    open_store(url3, mode="a").entry(*ENTRY).reset_blocks([2])
    code, out = cli("verify", url3)
    assert code == 1 and "incomplete: 2 of 3 blocks committed" in " ".join(out.split())
    code, out = cli("verify", url3, "--allow-partial")
    assert code == 0, out


def test_limits_are_raised_by_flags(tmp_path, cli):
    url = make(tmp_path / "s")
    code, out = cli("info", url, "--max-metadata-mb", "0.0001")
    assert code == 2 and "metadata document of" in out and "--max-metadata-mb" in out
    assert len(out.strip().splitlines()) == 1
    code, out = cli("verify", url, "--max-rows", "5")
    assert code == 2 and "over the limit of 5 rows" in out
    code, out = cli("verify", url, "--max-rows", "12")
    assert code == 0, out
    code, out = cli("info", url, "--max-chunk-mb", "0")
    assert code == 2 and "--max-chunk-mb 0.0: must be positive" in out


def test_symlinked_block_folder_is_never_written_through(tmp_path):
    """An extract resume into a store whose block folder links outside: refused, nothing written there."""
    url = make(tmp_path / "s")
    outside = tmp_path / "outside"
    outside.mkdir()
    blk = node(url, "blocks", "b000001")
    import shutil

    shutil.rmtree(blk)
    blk.symlink_to(outside, target_is_directory=True)
    e = open_store(url, mode="a").entry(*ENTRY)
    e.reset_blocks([1])
    with pytest.raises(StoreError, match="b000001: a symbolic link inside the store") as err:
        e.write_block(1, np.zeros((4, 3), np.float32), [np.zeros((2, 3), np.float32)] * 4, {})
    one_line(err.value)
    assert list(outside.iterdir()) == []


def declare_size(z: Path, member: str, size: int, out: Path) -> Path:
    """A copy of zip ``z`` whose local and central headers declare ``size`` bytes for ``member``."""
    data = bytearray(z.read_bytes())
    for sig, off, name_off in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        pos = data.find(sig)
        while pos >= 0:
            if data[pos + name_off:pos + name_off + len(member)] == member.encode():
                data[pos + off:pos + off + 4] = size.to_bytes(4, "little")
            pos = data.find(sig, pos + 4)
    out.write_bytes(bytes(data))
    return out


def test_zip_bombs_and_broken_zips(tmp_path):
    url = make(tmp_path / "s")
    z = tmp_path / "p.zip"
    pack(str(url), z)
    member = "m/ds/pooled/c/0/0"
    info = zipfile.ZipFile(z).getinfo(member)
    bomb = declare_size(z, member, 1 << 31, tmp_path / "bomb.zip")
    assert zipfile.ZipFile(bomb).getinfo(member).file_size == 1 << 31 != info.file_size
    with pytest.raises(StoreError, match="chunk of 2147483648 bytes, over the limit") as e:
        open_store(bomb).pooled(*ENTRY)
    one_line(e.value)
    liar = declare_size(z, member, info.file_size - 5, tmp_path / "liar.zip")  # data disagrees with the header
    with pytest.raises(StoreError, match="damaged zip member") as e:
        open_store(liar).pooled(*ENTRY)
    one_line(e.value)
    liar = declare_size(z, "zarr.json", 20, tmp_path / "liar_root.zip")
    with pytest.raises(StoreError, match="zarr.json: damaged zip member") as e:
        open_store(liar)
    one_line(e.value)
    (tmp_path / "junk.zip").write_bytes(b"not a zip at all")
    with pytest.raises(StoreError, match="not a readable zip file"):
        open_store(tmp_path / "junk.zip")
    (tmp_path / "cut.zip").write_bytes(z.read_bytes()[: z.stat().st_size // 2])
    with pytest.raises(StoreError, match="not a readable zip file"):
        open_store(tmp_path / "cut.zip")
    os.mkfifo(tmp_path / "fifo.zip")
    with pytest.raises(StoreError, match="not a regular file"):
        open_store(tmp_path / "fifo.zip")


BOMB_PEAK = """
import sys
from emocache.store import open_store, StoreError
try:
    {call}
except StoreError as e:
    print("refused:", e)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork + exec, so a child of a big pytest process would
# report its parent's peak
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("peak_mb", int(hwm.split()[1]) / 1024)
"""


@pytest.mark.parametrize("damage,call", [
    (_zstd_bomb_pooled, "open_store(sys.argv[1]).pooled('m', 'ds')"),
    (_zstd_bomb_index, "from emocache.verify import verify_store; verify_store(open_store(sys.argv[1]))"),
    (_json_padding, "open_store(sys.argv[1]).entry('m', 'ds')"),
])
def test_bombs_stay_under_512_mb(tmp_path, damage, call):
    url = make(tmp_path / "s")
    damage(url, tmp_path)
    p = subprocess.run([sys.executable, "-c", BOMB_PEAK.format(call=call), str(url)], capture_output=True, text=True,
                       timeout=180, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert p.returncode == 0, p.stderr
    peak = float(p.stdout.split("peak_mb")[1])
    assert peak < 512, p.stdout


def test_pack_refuses_destination_inside_source_and_cleans_stale_partials(tmp_path):
    url = make(tmp_path / "s")
    with pytest.raises(StoreError, match="inside the store being packed"):
        pack(str(url), url / "x.zip")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.zip.{dead.pid}.partial"
    stale.write_bytes(b"half a zip")
    pack(str(url), tmp_path / "out.zip")
    assert not stale.exists() and (tmp_path / "out.zip").exists()


def test_disk_full_is_one_line(tmp_path, monkeypatch):
    import errno

    import zarr.storage._local as local

    url = make(tmp_path / "s")

    def full(path, value, exclusive=False):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    e = open_store(url, mode="a").entry(*ENTRY)
    e.reset_blocks([1])
    monkeypatch.setattr(local, "_put", full)
    with pytest.raises(StoreError, match="No space left on device; free space and rerun") as err:
        merge(str(url), str(tmp_path / "dst"))  # merge
    one_line(err.value)
    with pytest.raises(StoreError, match="No space left on device; free space and rerun") as err:
        e.write_block(1, np.zeros((4, 3), np.float32), [np.zeros((2, 3), np.float32)] * 4, {})  # extract
    one_line(err.value)
    monkeypatch.undo()
    assert [s.committed for s in open_store(url).entry(*ENTRY).block_states()] == [True, False, True]


@pytest.mark.parametrize("name,ok", [("iemocap", True), ("urdu-v2.1", True), ("a/b", False), ("zarr.json", False),
                                     ("x" * 300, False), ("..", False), (".hidden", False), ("", False)])
def test_names_are_validated_at_the_boundary(tmp_path, name, ok):
    if ok:
        assert check_name(name) == name
        return
    with pytest.raises(ManifestError, match="cannot name a store entry") as e:
        check_name(name)
    one_line(e.value)
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"key": "k", "wav": "a.wav", "emo": "ang", "dataset": name}) + "\n")
    if name:
        with pytest.raises(ManifestError, match="cannot name a store entry"):
            read_manifests([m])
    with pytest.raises(StoreError, match="cannot name a store entry"):
        write_arrays(tmp_path / "s", "m", name, ["k"], ["a"], np.zeros((1, 2), np.float32))


def test_latin1_manifest_names_file_and_line(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_bytes(json.dumps({"key": "k", "wav": "a.wav", "emo": "ang"}).encode() + b"\n"
                  + b'{"key": "caf\xe9", "wav": "b.wav", "emo": "ang"}\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:2: not UTF-8 \(byte 0xe9"):
        read_manifests([m])


def test_s3_without_credentials_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("s3fs")
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("EMOCACHE_STORAGE_OPTIONS", raising=False)
    with pytest.raises(StoreError, match=r"s3://bucket/s: cannot open .*give credentials") as e:
        open_store("s3://bucket/s", storage_options={"endpoint_url": "http://127.0.0.1:9"})
    one_line(e.value)


CREATE = textwrap.dedent("""
    import sys
    from emocache.store import open_store
    keys = [f"k{i}" for i in range(50)]
    open_store(sys.argv[1], mode="a").create_entry("m", "ds", keys, ["a"] * 50, 8, 8, {"weights": "w"}, block_size=8)
""")


@pytest.mark.slow
def test_concurrent_create_entry_never_fails(tmp_path):
    url = tmp_path / "s"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [subprocess.Popen([sys.executable, "-c", CREATE, str(url)], stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(15)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), [err[-300:] for code, err in results if code]
    assert open_store(url).entry(*ENTRY).n == 50


CLI_CASES = [
    ("FIFO chunk", _fifo_chunk, {"info": 0, "verify": 1, "merge": 2, "pack": 2}, "FIFO inside the store"),
    ("symlinked chunk", _symlink_chunk, {"info": 0, "verify": 1, "merge": 2, "pack": 2}, "symbolic link"),
    ("zarr.json -> /dev/zero", _symlink_root_json, {"info": 2, "verify": 2, "merge": 2, "pack": 2}, "symbolic link"),
    ("zstd bomb in index", _zstd_bomb_index, {"info": 2, "verify": 1, "merge": 2, "pack": 2}, "more than the 64"),
    ("JSON nested 100000 deep", _json_very_deep, {"info": 2, "verify": 2, "merge": 2, "pack": 2}, "nested too deeply"),
    ("deleted pooled chunk", _delete_pooled, {"info": 0, "verify": 1, "merge": 2, "pack": 0}, "missing"),
]


@pytest.mark.parametrize("name,damage,codes,match", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_hostile_store_cli(tmp_path, cli, name, damage, codes, match):
    """Every command ends with its documented exit code; errors (2) are one line naming the problem."""
    url = make(tmp_path / "s")
    damage(url, tmp_path)
    for cmd, want in codes.items():
        args = {"merge": (url, tmp_path / "dst"), "pack": (url, tmp_path / f"{cmd}.zip")}.get(cmd, (url,))
        code, out = cli(cmd, *args)
        assert code == want, (cmd, out)
        if want:
            assert match in out, (cmd, out)
        if want == 2:
            assert len(out.strip().splitlines()) == 1 and out.startswith("error:"), (cmd, out)


def test_decoded_size_is_read_from_headers_without_decoding():
    import gzip

    from numcodecs import Blosc, Zstd

    from emocache.store.guard import gzip_size, json_depth, zstd_content_size

    raw = np.arange(1000, dtype=np.float32).tobytes()
    assert zstd_content_size(Zstd(level=3).encode(raw)) == 4000
    assert zstd_content_size(zstd_bomb(1 << 31)) == 1 << 31
    assert zstd_content_size(b"not zstd") is None
    assert int.from_bytes(Blosc().encode(raw)[4:8], "little") == 4000
    bomb = gzip.compress(bytes(64 << 20))  # 64 MiB of zeros in ~64 KB
    assert gzip_size(bomb, 1 << 20) == (1 << 20) + (1 << 20)  # stops one step past the limit
    assert gzip_size(gzip.compress(raw) + gzip.compress(raw), 1 << 20) == 8000  # multi-member streams count whole
    assert json_depth({"a": [1, {"b": []}]}) == 4 and json_depth(5) == 0


@pytest.mark.parametrize("damage,match", [
    (_delete_pooled, r"/s/m/ds/pooled: chunk\(s\) \['c/1/0'\] missing from a committed block"),
    (_corrupt_pooled, r"/s/m/ds/pooled: unreadable \("),
    (_fifo_chunk, r"/s/m/ds/pooled/c/1/0: a FIFO inside the store"),
])
def test_trainer_reads_refuse_damage_naming_store_and_array(tmp_path, damage, match):
    """The trainer reads through the store API: a lost, corrupt or FIFO chunk is a one-line error, never zeros."""
    from trainer.data import load_features, open_store as trainer_open

    url = make(tmp_path / "s")
    damage(url, tmp_path)
    with pytest.raises(ValueError, match=match) as e:  # the trainer CLI prints ValueErrors as one line, exit 2
        load_features(trainer_open(str(url)), *ENTRY)
    one_line(e.value)
