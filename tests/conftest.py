import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def shared_data_root() -> Path | None:
    env = os.environ.get("MIXLAB_TEST_DATA")
    if env and Path(env).exists():
        return Path(env)
    return SHARED_DATA if SHARED_DATA.exists() else None


@pytest.fixture
def data_root():
    """The staged datasets (../shared/data beside the repo); tests that need them skip without them."""
    root = shared_data_root()
    if root is None:
        pytest.skip("no ../shared/data beside the repository (set MIXLAB_TEST_DATA to a data root)")
    return root
