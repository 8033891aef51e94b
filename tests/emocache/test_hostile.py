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
    code, out = cli("info", url, "--max-json-values", "10")
    assert code == 2 and "JSON values, over the limit of 10" in out and "--max-json-values" in out


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


# -- issue 22: bounded memory whatever an entry declares, damage refused by every reader, no hidden entries ----------
HUGE_N = (1 << 24) - 1
"""Rows an entry may declare within the default limits (``--max-rows`` is 2^24)."""


def _tiny(url: Path, n: int = 4, block_size: int = 1, **kw) -> Path:
    rng = np.random.default_rng(1)
    frames = [rng.normal(size=(3, 3)).astype(np.float32) for _ in range(n)]
    write_arrays(url, *ENTRY, [f"k{i}" for i in range(n)], ["a"] * n, np.stack([f.mean(0) for f in frames]),
                 frames, block_size=block_size, **kw)
    return url


def _declare_rows(url: Path, n: int, block_size: int = 1) -> None:
    edit(node(url, "zarr.json"), lambda m: m["attributes"].update(n=n, block_size=block_size))
    for a in ("keys", "labels"):
        edit(node(url, a, "zarr.json"), lambda m: m.update(shape=[n]))
    for a, d in (("pooled", 3), ("index", 2)):
        edit(node(url, a, "zarr.json"), lambda m, d=d: m.update(shape=[n, d]))


def huge_n_header(tmp: Path) -> Path:
    """The issue's 2 KB store: a 4-row entry whose headers declare n = 2^24 - 1 rows in blocks of 1."""
    url = _tiny(tmp / "s")
    _declare_rows(url, HUGE_N)
    return url


def _string_chunk(url: Path, array: str, values: bytes, n: int) -> None:
    """Replace ``array`` (keys or labels) by one stored chunk of ``n`` strings (the vlen-utf8 bytes ``values``)."""
    import google_crc32c
    from numcodecs import Zstd

    edit(node(url, array, "zarr.json"),
         lambda m: m.update(shape=[n], chunk_grid={"name": "regular", "configuration": {"chunk_shape": [n]}}))
    body = Zstd(level=3).encode(n.to_bytes(4, "little") + values)
    node(url, array, "c", "0").write_bytes(bytes(body) + google_crc32c.value(bytes(body)).to_bytes(4, "little"))


def huge_n_keys(tmp: Path) -> Path:
    """n = 2^24 - 1 backed by keys and labels that are stored: a few KB of zstd holding the key 'a' 2^24 - 1 times."""
    url = huge_n_header(tmp)
    for array in ("keys", "labels"):
        _string_chunk(url, array, b"\x01\x00\x00\x00a" * HUGE_N, HUGE_N)
    return url


def chunk_at_limit(tmp: Path) -> Path:
    """One pooled chunk of 128 MiB (the --max-chunk-mb default), stored as a few KB of zstd zeros."""
    n = 1 << 15
    url = tmp / "s"
    write_arrays(url, *ENTRY, [f"k{i}" for i in range(n)], ["a"] * n, np.zeros((n, 1024), np.float32),
                 block_size=n)
    return url


def frames_declared_huge(tmp: Path) -> Path:
    """Block 1's frames array declares 2^40 rows (6.3 million chunks); one chunk is stored."""
    url = make(tmp / "s")
    edit(node(url, "blocks", "b000001", "frames", "zarr.json"), lambda m: m.update(shape=[1 << 40, 3]))
    return url


def dense_json(tmp: Path) -> Path:
    """The entry's zarr.json carries 6 MB of ``[{},{},...]``: 4 million JSON values, hundreds of MB once parsed."""
    url = make(tmp / "s")
    edit(node(url, "zarr.json"), lambda m: m["attributes"].__setitem__("x", [{}] * 2_000_000))
    return url


def dup_keys(tmp: Path) -> Path:
    url = make(tmp / "s")
    open_store(url, mode="a").entry(*ENTRY).keys_array[:] = np.array([f"k{i}" for i in range(N - 1)] + ["k0"],
                                                                      dtype=object)
    return url


def overlapping_rows(tmp: Path) -> Path:
    url = make(tmp / "s")
    _set_index(url, 0, [[0, 3], [1, 3]])
    return url


def nan_pooled(tmp: Path) -> Path:
    url = make(tmp / "s")
    open_store(url, mode="a").entry(*ENTRY).pooled_array[6] = np.full(3, np.nan, np.float32)
    return url


def nan_allowed(tmp: Path) -> Path:
    url = tmp / "s"
    P = np.ones((6, 3), np.float32)
    P[2, 1] = np.nan
    write_arrays(url, *ENTRY, [f"k{i}" for i in range(6)], ["a", "b"] * 3, P, block_size=4, allow_nonfinite=True)
    return url


def entry_one_group_deeper(tmp: Path) -> Path:
    """The only entry sits at m/x/ds: readers list no entry."""
    import shutil

    url = make(tmp / "s")
    (url / "m" / "x").mkdir()
    shutil.move(url / "m" / "ds", url / "m" / "x" / "ds")
    (url / "m" / "x" / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                           "attributes": {}}))
    return url


def _repack(z: Path, out: Path, change) -> Path:
    """A copy of zip ``z`` with ``change(name, data) -> data or None (dropped)`` applied to every member."""
    with zipfile.ZipFile(z) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            data = change(name, src.read(name))
            if data is not None:
                dst.writestr(name, data)
    return out


def _packed_two_entries(tmp: Path) -> Path:
    url = make(tmp / "s")
    write_arrays(url, "m", "ds2", ["a", "b"], ["x", "y"], np.ones((2, 3), np.float32))
    pack(str(url), tmp / "p.zip")
    return tmp / "p.zip"


def zip_consolidated_omits_entry(tmp: Path) -> Path:
    def change(name, data):
        if name != "zarr.json":
            return data
        root = json.loads(data)
        nodes = root["consolidated_metadata"]["metadata"]
        root["consolidated_metadata"]["metadata"] = {k: v for k, v in nodes.items() if not k.startswith("m/ds2")}
        return json.dumps(root)

    return _repack(_packed_two_entries(tmp), tmp / "hidden.zip", change)


def zip_consolidated_lists_missing_entry(tmp: Path) -> Path:
    return _repack(_packed_two_entries(tmp), tmp / "ghost.zip",
                   lambda name, data: None if name.startswith("m/ds2/") else data)


def zip_member_pickle_codec(tmp: Path) -> Path:
    """The member m/ds/pooled/zarr.json names a pickle codec; the consolidated metadata readers use is clean."""
    def change(name, data):
        if name != "m/ds/pooled/zarr.json":
            return data
        meta = json.loads(data)
        meta["codecs"].insert(1, {"name": "numcodecs.pickle"})
        return json.dumps(meta)

    url = make(tmp / "s")
    pack(str(url), tmp / "p.zip")
    return _repack(tmp / "p.zip", tmp / "evil.zip", change)


def _args(cmd: str, url: Path, tmp: Path) -> list:
    export = ["export", "/".join(ENTRY), "--store", url, "--to"]
    args = {"merge": ["merge", url, tmp / "dst"], "pack": ["pack", url, tmp / "out.zip"],
            "export-hf": [*export, "hf", tmp / "hf"], "export-lhotse": [*export, "lhotse", tmp / "lh"]}
    return args.get(cmd, [cmd, url])


# (store, command, exit code, fragment(s) of the one-line message or report, peak MB bound or None). Every row runs
# the console command in a child process with a timeout; the bound is checked where memory is the point.
ISSUE22 = [
    ("n 2^24-1 header", huge_n_header, "info", 0, "16777215: 4 done, 0 failed, 16777211 pending", 512),
    ("n 2^24-1 header", huge_n_header, "verify", 1, "keys: chunk(s) ['c/1', 'c/2', 'c/3', 'c/4', 'c/5'] missing "
                                                    "(4194303 of 4194304)", 512),
    ("n 2^24-1 header", huge_n_header, "merge", 2, "keys: chunk(s) ['c/1'", 512),
    ("n 2^24-1 header", huge_n_header, "export-hf", 2, "keys: chunk(s) ['c/1'", 512),
    ("n 2^24-1 keys stored", huge_n_keys, "info", 0, "16777215: 4 done", 512),
    ("n 2^24-1 keys stored", huge_n_keys, "verify", 1, "duplicate key 'a' (rows 0 and 1)", 512),
    ("n 2^24-1 keys stored", huge_n_keys, "merge", 2, "duplicate key 'a' (rows 0 and 1)", 512),
    ("n 2^24-1 keys stored", huge_n_keys, "export-lhotse", 2, "duplicate key 'a' (rows 0 and 1)", 512),
    ("128 MiB chunk of zeros", chunk_at_limit, "verify", 0, "m/ds: 1/1 blocks committed, ok", 512),
    ("frames declaring 2^40 rows", frames_declared_huge, "verify", 1,
     ("block 1: StoreError: ", "b000001/frames: chunk(s) ['c/1/0'"), 512),
    ("frames declaring 2^40 rows", frames_declared_huge, "export-lhotse", 2, "b000001/frames: chunk(s) ['c/1/0'",
     512),
    ("frames declaring 2^40 rows", frames_declared_huge, "merge", 2, "b000001/frames: chunk(s) ['c/1/0'", 512),
    ("zarr.json of dense JSON", dense_json, "info", 2, "m/ds/zarr.json: metadata document with up to 4000030 JSON "
                                                       "values, over the limit of 2097152", 512),
    ("duplicate keys", dup_keys, "verify", 1, "duplicate key 'k0' (rows 0 and 11)", None),
    ("duplicate keys", dup_keys, "merge", 2, "duplicate key 'k0' (rows 0 and 11)", None),
    ("duplicate keys", dup_keys, "export-hf", 2, "duplicate key 'k0'", None),
    ("duplicate keys", dup_keys, "export-lhotse", 2, "duplicate key 'k0'", None),
    ("overlapping index rows", overlapping_rows, "verify", 1, "block 0: ValueError: index rows overlap", None),
    ("overlapping index rows", overlapping_rows, "merge", 2, "block 0: index rows overlap", None),
    ("overlapping index rows", overlapping_rows, "export-lhotse", 2, "index: rows overlap (two utterances share "
                                                                     "frames) or overflow int64 in block(s) [0]", None),
    ("NaN pooled", nan_pooled, "verify", 1, "pooled: NaN/inf values in block(s) [1]", None),
    ("NaN pooled", nan_pooled, "merge", 2, "pooled: NaN/inf values in block(s) [1]", None),
    ("NaN pooled", nan_pooled, "export-hf", 2, "pooled: NaN/inf values in block(s) [1], which the entry does not "
                                               "allow", None),
    ("NaN pooled, allowed", nan_allowed, "verify", 0, "m/ds: 2/2 blocks committed, ok", None),
    ("NaN pooled, allowed", nan_allowed, "export-hf", 0, "", None),
    ("entry one group deeper", entry_one_group_deeper, "info", 0, ": 0 entries", None),
    ("entry one group deeper", entry_one_group_deeper, "verify", 1, "/s/m/x/ds: an entry hidden outside the layout",
     None),
    ("zip: consolidated metadata omits an entry", zip_consolidated_omits_entry, "info", 0, ": 1 entry", None),
    ("zip: consolidated metadata omits an entry", zip_consolidated_omits_entry, "verify", 1,
     "hidden.zip/m/ds2: stored but missing from the consolidated metadata", None),
    ("zip: consolidated metadata lists a missing entry", zip_consolidated_lists_missing_entry, "verify", 1,
     "ghost.zip/m/ds2: in the consolidated metadata but not stored", None),
    ("zip: member zarr.json names a pickle codec", zip_member_pickle_codec, "verify", 2,
     "evil.zip/m/ds/pooled: uses codec(s) ['numcodecs.pickle']", None),
    ("zip: member zarr.json names a pickle codec", zip_member_pickle_codec, "pack", 2,
     "evil.zip/m/ds/pooled: uses codec(s) ['numcodecs.pickle']", None),
]


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("name,build,cmd,code,fragment,peak_mb", ISSUE22,
                         ids=[f"{r[0]}: {r[2]}" for r in ISSUE22])
def test_issue22_hostile_store_cli(tmp_path, name, build, cmd, code, fragment, peak_mb):
    """Each hostile store: the command's exit code and one-line message (2: one `error:` line), in bounded memory
    and time (the child's own peak resident memory)."""
    from tests.helpers.cli import run_emocache_peak

    url = build(tmp_path)
    p, peak = run_emocache_peak(*_args(cmd, url, tmp_path), timeout=120)
    out = " ".join(line for line in (p.stdout + p.stderr).splitlines() if not line.startswith("peak_kb "))
    assert p.returncode == code, out[-2000:]
    for part in (fragment,) if isinstance(fragment, str) else fragment:
        assert part in out, out[-2000:]
    if code == 2:
        lines = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip() and not ln.startswith("peak_kb ")]
        assert len(lines) == 1 and lines[0].startswith("error:"), lines
    if peak_mb is not None:
        assert peak < peak_mb, f"{name} {cmd}: peak {peak:.0f} MB"


def _trainer_features(url):
    from trainer.data import load_features

    return load_features(open_store(url), *ENTRY)


def _trainer_frames(url):
    from trainer.frames import load_frames

    st = open_store(url)
    return load_frames(st, *ENTRY, st.pooled(*ENTRY)[0])


# (store, the reader, the one-line StoreError it raises): every reader refuses what verify refuses
READERS = [
    ("n 2^24-1 header: pooled", huge_n_header, _pooled, r"keys: chunk\(s\) \['c/1'"),
    ("n 2^24-1 header: labels", huge_n_header, lambda url: open_store(url).labels(*ENTRY), r"keys: chunk\(s\)"),
    ("n 2^24-1 header: all_frames", huge_n_header, lambda url: open_store(url).all_frames(*ENTRY),
     r"keys: chunk\(s\)"),
    ("n 2^24-1 header: trainer", huge_n_header, _trainer_features, r"keys: chunk\(s\)"),
    ("duplicate keys: pooled", dup_keys, _pooled, r"m/ds/keys: duplicate key 'k0' \(rows 0 and 11\).*re-extract"),
    ("duplicate keys: all_frames", dup_keys, lambda url: open_store(url).all_frames(*ENTRY), "duplicate key 'k0'"),
    ("duplicate keys: frames", dup_keys, lambda url: open_store(url).frames(*ENTRY, "k3"), "duplicate key 'k0'"),
    ("duplicate keys: trainer", dup_keys, _trainer_features, "duplicate key 'k0'"),
    ("overlapping rows: all_frames", overlapping_rows, lambda url: open_store(url).all_frames(*ENTRY),
     r"m/ds/index: rows overlap .* block\(s\) \[0\]; run `emocache verify`.*--redo-failed"),
    ("overlapping rows: all_frames float16", overlapping_rows,
     lambda url: open_store(url).all_frames(*ENTRY, dtype=np.float16), r"rows overlap"),
    ("overlapping rows: iter_frames", overlapping_rows, _frames, r"rows overlap .* block\(s\) \[0\]"),
    ("overlapping rows: frames", overlapping_rows, lambda url: open_store(url).frames(*ENTRY, "k2"),
     r"rows overlap .* block\(s\) \[0\]"),
    ("overlapping rows: trainer --head mean", overlapping_rows, _trainer_frames, r"rows overlap"),
    ("NaN pooled: pooled", nan_pooled, _pooled,
     r"m/ds/pooled: NaN/inf values in block\(s\) \[1\].*allow_nonfinite.*--redo-failed"),
    ("NaN pooled: trainer", nan_pooled, _trainer_features, r"pooled: NaN/inf values"),
    ("frames declaring 2^40 rows: iter_frames", frames_declared_huge, _frames, r"b000001/frames: chunk\(s\)"),
]


@pytest.mark.parametrize("name,build,read,match", READERS, ids=[r[0] for r in READERS])
def test_issue22_readers_refuse(tmp_path, name, build, read, match):
    with pytest.raises(StoreError, match=match) as e:
        read(build(tmp_path))
    one_line(e.value)


def test_nonfinite_pooled_only_on_purpose(tmp_path):
    """write_arrays refuses NaN/inf pooled vectors unless asked; an entry that allows them reads them back (the
    trainer's --nonfinite then decides), and a merge keeps the permission."""
    P = np.ones((4, 3), np.float32)
    P[1, 0] = np.inf
    with pytest.raises(StoreError, match=r"1 pooled vector\(s\) hold NaN/inf \(e.g. key\(s\) \['k1'\]\).*"
                                         "allow_nonfinite=True") as e:
        write_arrays(tmp_path / "a", *ENTRY, [f"k{i}" for i in range(4)], ["a"] * 4, P)
    one_line(e.value)
    url = nan_allowed(tmp_path)
    keys, X = open_store(url).pooled(*ENTRY)
    assert keys[2] == "k2" and np.isnan(X[2, 1]) and np.isfinite(np.delete(X, 2, 0)).all()
    merge(str(url), str(tmp_path / "dst"))
    assert open_store(tmp_path / "dst").entry(*ENTRY).allow_nonfinite
    with pytest.raises(StoreError, match="allow_nonfinite=True, this run has False"):
        write_arrays(url, *ENTRY, [f"k{i}" for i in range(6)], ["a", "b"] * 3, np.ones((6, 3), np.float32),
                     block_size=4)


def test_string_reads_stop_at_the_first_duplicate(tmp_path, monkeypatch):
    """Keys are parsed one at a time: a store repeating one key 2^24 - 1 times costs one chunk's bytes, and the
    error names the key and its two rows; labels repeat freely and share one string object."""
    url = huge_n_keys(tmp_path)
    e = open_store(url).entry(*ENTRY)
    with pytest.raises(StoreError, match=r"duplicate key 'a' \(rows 0 and 1\)"):
        e.keys
    url2 = _tiny(tmp_path / "t", n=5)
    _string_chunk(url2, "labels", b"\x03\x00\x00\x00neu" * 5, 5)
    labels = open_store(url2).entry(*ENTRY).labels
    assert labels == ["neu"] * 5 and all(x is labels[0] for x in labels)
    _string_chunk(url2, "labels", b"\x03\x00\x00\x00neu" * 4, 5)  # one string short of its count
    with pytest.raises(StoreError, match="labels: chunk 0 ends inside its strings"):
        open_store(url2).entry(*ENTRY).labels
