"""A module-scoped autouse fixture for test modules of tiny tensors: importing ``one_thread`` into a test
module runs its tests with one torch thread (on 2 shared cores, thread fan-out costs more than it saves)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
