"""Stores at s3:// URLs against a real S3-compatible HTTP endpoint (moto_server subprocess on 127.0.0.1).

gs:// goes through gcsfs and the same FsspecStore code path; there is no GCS server to test against here.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from tests.helpers.scale import MODEL, assert_entries_equal, entry_of, fbank_config

from emocache.extract import extract
from emocache.share import consolidate, merge, pack
from emocache.store import STORAGE_OPTIONS_ENV, StoreError, open_store
from emocache.verify import verify_store

pytest.importorskip("s3fs")
pytestmark = pytest.mark.slow  # a moto S3 server process per session, real HTTP


@pytest.fixture
def bucket(moto_endpoint):
    import boto3

    url, opts = moto_endpoint
    name = f"emo-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=url, aws_access_key_id=opts["key"], aws_secret_access_key=opts["secret"],
                 region_name="us-east-1").create_bucket(Bucket=name)
    return name


def test_extract_info_verify_open_store_on_s3(moto_endpoint, bucket, demo_corpus, fbank_store, cli):  # noqa: F811
    _, opts = moto_endpoint
    url = f"s3://{bucket}/features/store"
    report = extract(fbank_config(demo_corpus, url, storage_options=opts), progress=False)
    assert report.ok and report.datasets["demo"]["done"] == 36

    e = entry_of(url, storage_options=opts)
    ref = entry_of(fbank_store)
    assert e.keys == ref.keys
    np.testing.assert_array_equal(e.index(), ref.index())
    np.testing.assert_allclose(e.pooled()[1], ref.pooled()[1], rtol=1e-5, atol=1e-5)
    fs = e.all_frames(threads=2)  # chunks through the guarded fsspec store's get
    assert fs.keys == [k for k, _ in e.iter_frames()]
    np.testing.assert_array_equal(fs.data, np.concatenate([f for _, f in e.iter_frames()]))
    assert all(c.ok for c in verify_store(open_store(url, storage_options=opts)))

    so = json.dumps(opts)
    code, out = cli("info", url, "--json", "--storage-options", so)
    assert code == 0, out
    (row,) = json.loads(out)
    assert row["done"] == 36 and row["bytes"] > 0 and row["provenance"]["model"] == MODEL
    code, out = cli("verify", url, "--storage-options", so)
    assert code == 0 and "9/9 blocks committed, ok" in out

    again = extract(fbank_config(demo_corpus, url, storage_options=opts), progress=False)
    assert again.datasets["demo"]["blocks_done"] == 0  # resume works remotely too


def test_env_storage_options_and_cli_extract(moto_endpoint, bucket, demo_corpus, cli, monkeypatch):  # noqa: F811
    _, opts = moto_endpoint
    monkeypatch.setenv(STORAGE_OPTIONS_ENV, json.dumps(opts))
    url = f"s3://{bucket}/s"
    code, out = cli("extract", "--model", MODEL, "--manifest", demo_corpus.manifest, "--store", url,
                    "--audio-root", demo_corpus.audio_root, "--device", "cpu", "--block-size", "8", "--no-progress")
    assert code == 0, out
    assert open_store(url).entries() == [(MODEL, "demo")]  # options from the environment


def test_remote_corruption_found_and_redone(moto_endpoint, bucket, demo_corpus):  # noqa: F811
    import s3fs

    _, opts = moto_endpoint
    url = f"s3://{bucket}/s"
    extract(fbank_config(demo_corpus, url, storage_options=opts), progress=False)
    fs = s3fs.S3FileSystem(**opts, skip_instance_cache=True)
    key = f"{bucket}/s/{MODEL}/demo/blocks/b000002/frames/c/0/0"
    fs.pipe(key, fs.cat(key)[:-10])
    (chk,) = verify_store(open_store(url, storage_options=opts))
    assert chk.bad_blocks == [2]
    report = extract(fbank_config(demo_corpus, url, storage_options=opts, redo_failed=True), progress=False)
    assert report.datasets["demo"]["blocks_done"] == 1
    assert all(c.ok for c in verify_store(open_store(url, storage_options=opts)))


def test_pack_merge_consolidate_with_s3(moto_endpoint, bucket, demo_corpus, fbank_store, tmp_path):  # noqa: F811
    _, opts = moto_endpoint
    url = f"s3://{bucket}/shared"
    (row,) = merge(str(fbank_store), url, storage_options=opts)
    assert row["copied"] == 9 and row["created"]
    assert consolidate(url, storage_options=opts) > 10
    st = open_store(url, storage_options=opts)
    assert st.root.metadata.consolidated_metadata is not None and st.entries() == [(MODEL, "demo")]
    pack(url, tmp_path / "p.zip", storage_options=opts)
    assert_entries_equal(entry_of(tmp_path / "p.zip"), entry_of(fbank_store))


def test_missing_remote_store_is_a_clear_error(moto_endpoint, bucket):  # noqa: F811
    _, opts = moto_endpoint
    with pytest.raises(StoreError, match="not a Zarr v3 group|no store"):
        open_store(f"s3://{bucket}/nothing", storage_options=opts)
