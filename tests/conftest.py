import os
from pathlib import Path

# Threads that wait for work sleep instead of spinning (GNU OpenMP reads this when torch loads it): on a shared or
# busy machine a spinning second thread made one three-second engine run take minutes. Numbers do not change.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def shared_data_root() -> Path | None:
    env = os.environ.get("MIXLAB_TEST_DATA")
    if env and Path(env).exists():
        return Path(env)
    return SHARED_DATA if SHARED_DATA.exists() else None


@pytest.fixture
def one_thread():
    """One torch thread for the test (restored after): small networks and tensors run faster on one, and a second
    one only waits for a busy core on a shared machine. Use with ``pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data_root():
    """The staged datasets (../shared/data beside the repo); tests that need them skip without them."""
    root = shared_data_root()
    if root is None:
        pytest.skip("no ../shared/data beside the repository (set MIXLAB_TEST_DATA to a data root)")
    return root
