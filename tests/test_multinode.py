"""Jobs under torchrun: a tensor-parallel job, two nodes simulated on this machine (two launchers,
one rank each, meeting through a c10d rendezvous on the loopback address, as two hosts of a
cluster would; docs/multinode.md) that train as one and then lose a node, and a tensor-parallel
job one of whose ranks stops."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from golden_run import data_args
from helpers import child_processes

from rmt_megatron.run.metrics_log import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
RUN_FLAGS = (
    "--lr-warmup-iters 0 --rmt-prompts-per-step 2 --rmt-group-size 2 --eval-positions 2 "
    "--micro-batch-size 4 --rmt-max-response-length 40 --log-interval 1 --eval-interval 100 "
    "--save-interval 100"
).split()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(launcher: list[str], data: Path, save: Path, iters: int, log: Path, *extra: str):
    """One torchrun launcher in its own session (so that a whole "node" can be killed)."""
    argv = [*data_args(data), *RUN_FLAGS, "--train-iters", str(iters), "--save", str(save)]
    argv += ["--tensorboard-dir", str(save / "tb"), "--distributed-timeout-minutes", "0.5"]
    argv += extra
    return subprocess.Popen(
        [str(TORCHRUN), *launcher, str(ROOT / "pretrain_rmt.py"), *argv],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )


def _node(port: int, run_id: str) -> list[str]:
    return [
        "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id,
    ]  # fmt: skip


def _wait_for_store(port: int) -> None:
    """Until a launcher listens on `port`: the first to bind it hosts the rendezvous store."""
    deadline = time.time() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.time() < deadline, f"no launcher listens on port {port}"
            time.sleep(0.2)


def test_two_launchers_train_as_one_and_losing_a_node_ends_the_job(corpus_data, tmp_path):
    one = _launch(["--standalone", "--nproc-per-node", "2"], corpus_data, tmp_path / "one", 2,
                  tmp_path / "one.log")  # fmt: skip
    assert one.wait(timeout=300) == 0, (tmp_path / "one.log").read_text()[-3000:]

    port = _free_port()
    nodes = []
    for index in range(2):
        nodes.append(
            _launch(
                _node(port, "same"), corpus_data, tmp_path / "two", 2, tmp_path / f"n{index}.log"
            )
        )
        time.sleep(2)  # the first launcher hosts the rendezvous store
    for index, node in enumerate(nodes):
        assert node.wait(timeout=300) == 0, (tmp_path / f"n{index}.log").read_text()[-3000:]
    keys = ("loss_ntp", "loss_rl", "grad_norm", "match_reward", "reasoning_length")
    two_nodes, one_node = read_metrics(tmp_path / "two"), read_metrics(tmp_path / "one")
    assert len(one_node) == 2  # both runs logged their 2 steps
    assert [{k: m[k] for k in keys} for m in two_nodes] == [
        {k: m[k] for k in keys} for m in one_node
    ]

    # a second job; its second node is lost (launcher and rank killed) after step 2
    port = _free_port()
    host = _launch(_node(port, "lose"), corpus_data, tmp_path / "lose", 200, tmp_path / "h.log")
    _wait_for_store(port)  # the host launcher holds the rendezvous store; the other is lost
    other = _launch(_node(port, "lose"), corpus_data, tmp_path / "lose", 200, tmp_path / "o.log")
    _wait_for_step(host, tmp_path / "h.log", "step 2/200")
    for pid in (other.pid, *child_processes(other.pid)):  # the launcher and its rank
        os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    code = host.wait(timeout=120)
    log = (tmp_path / "h.log").read_text()
    assert code != 0 and time.time() - killed_at < 60
    assert "error: lost contact with another rank" in log
    assert "[rank0]: Traceback" not in log and "RendezvousConnectionError" not in log


def test_a_tensor_parallel_job_under_torchrun_trains_to_the_end(corpus_data, tmp_path):
    """torchrun --nproc-per-node 2 pretrain_rmt.py --tensor-model-parallel-size 2: two steps, a
    checkpoint and the final evaluation, exit status 0 (as a user launches TP)."""
    job = _launch(["--standalone", "--nproc-per-node", "2"], corpus_data, tmp_path / "tp", 2,
                  tmp_path / "tp.log", "--tensor-model-parallel-size", "2")  # fmt: skip
    assert job.wait(timeout=300) == 0, (tmp_path / "tp.log").read_text()[-3000:]
    metrics = read_metrics(tmp_path / "tp")
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["finite"] == 1.0 for m in metrics)
    assert (tmp_path / "tp" / "eval" / "iter_0000002.json").is_file()


def _wait_for_step(launcher: subprocess.Popen, log: Path, step: str) -> None:
    deadline = time.time() + 300
    while step not in log.read_text():
        assert launcher.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)


def test_a_stopped_rank_ends_a_tensor_parallel_job_within_the_timeout(corpus_data, tmp_path):
    """SIGSTOP one of two TP ranks after step 2: the other rank's next collective fails after
    --distributed-timeout-minutes (0.25 here, 15 s), it prints the one-line message, and torchrun
    ends the job (killing the stopped rank) with a non-zero status."""
    log = tmp_path / "tp.log"
    job = _launch(["--standalone", "--nproc-per-node", "2"], corpus_data, tmp_path / "tp", 200,
                  log, "--tensor-model-parallel-size", "2", "--distributed-timeout-minutes",
                  "0.25")  # fmt: skip
    _wait_for_step(job, log, "step 2/200")
    ranks = child_processes(job.pid)
    assert len(ranks) == 2
    os.kill(max(ranks), signal.SIGSTOP)
    stopped_at = time.time()
    try:
        code = job.wait(timeout=180)
    finally:
        for pid in ranks:  # never leave a stopped process behind, whatever happened
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert code != 0 and time.time() - stopped_at < 120, text[-3000:]
    assert "error: lost contact with another rank" in text
    assert "]: Traceback" not in text
