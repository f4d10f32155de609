import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The CI gate's calibration workload (bench.core.calibrate, ~0.7 s a worker) only where a test asks for it.
os.environ.setdefault("BENCH_CALIBRATE_REPEATS", "0")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two xdist workers share the machine's cores: the bench.run and worker subprocesses the tests start inherit one
    # thread each too (two threads per process on 2 busy cores made one in-process measurement 17x slower: 164 s vs 9 s).
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Under pytest-xdist (make test runs two workers) each worker takes one core.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny():
    """A fresh tiny-random pipeline (0.1 s to build; methods attach adapters, so tests never share one)."""
    from bench.core.models import load_model

    return load_model("tiny-random")
