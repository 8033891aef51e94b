"""dask engine: a LocalCluster of 2 worker processes equals a single-process run, resumes, and reports."""

from __future__ import annotations

import pytest
from tests.helpers.scale import assert_entries_equal, entry_of, fbank_config, run_child

from emocache.distributed import SchedulerError, client_for
from emocache.extract import extract


@pytest.mark.slow
def test_local_cluster_equals_single_process_and_resumes(tmp_path, demo_corpus):
    ref, store = tmp_path / "ref", tmp_path / "dask"
    run_child(fbank_config(demo_corpus, ref))  # one torch thread per process, like the dask workers
    run_child(fbank_config(demo_corpus, store, part="0/3"))  # a third of the blocks done before the cluster runs

    report = extract(fbank_config(demo_corpus, store, scheduler="local:2"), progress=False)
    e = entry_of(store)
    assert report.ok and report.datasets["demo"] == {"blocks_done": 6, "blocks_skipped": 3, "done": 24, "failed": 0}
    assert_entries_equal(e, entry_of(ref))

    again = extract(fbank_config(demo_corpus, store, scheduler="local:2"), progress=False)
    assert again.datasets["demo"]["blocks_done"] == 0 and again.datasets["demo"]["blocks_skipped"] == 9


@pytest.mark.slow
def test_client_for_local_runs_tasks_in_worker_processes():
    import os

    with client_for("local:2", gpus=False) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        pids = set(client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids


@pytest.mark.parametrize("bad", ["local:x", "local:0", "localhost:8786"])
def test_bad_scheduler_is_a_clear_error(bad):
    with pytest.raises(SchedulerError, match="--scheduler"):
        with client_for(bad):
            pass


@pytest.mark.slow
def test_unreachable_scheduler():
    with pytest.raises(SchedulerError, match="cannot reach the scheduler"):
        with client_for("tcp://127.0.0.1:1", timeout="1s"):
            pass


class _FakeClient:
    def __init__(self, resources):
        self.resources = resources

    def scheduler_info(self):
        return {"workers": {"w0": {"resources": self.resources}}}


def test_gpu_tasks_declare_one_gpu(demo_corpus, tmp_path):
    from emocache.distributed import gpu_resources

    cfg = fbank_config(demo_corpus, tmp_path / "s")
    assert gpu_resources(_FakeClient({"GPU": 1}), cfg) is None  # device cpu
    auto = fbank_config(demo_corpus, tmp_path / "s", device="auto")
    assert gpu_resources(_FakeClient({"GPU": 1}), auto) == {"GPU": 1}
    assert gpu_resources(_FakeClient({}), auto) is None
    with pytest.raises(SchedulerError, match="no worker declares a GPU"):
        gpu_resources(_FakeClient({}), fbank_config(demo_corpus, tmp_path / "s", device="cuda"))
