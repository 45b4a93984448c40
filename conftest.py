import os

import pytest
import torch

# Chapters executed by nbval inherit this, so vitlib.book.setup() picks quick mode under the tests.
os.environ.setdefault("VITLIB_UNDER_TEST", "1")


@pytest.fixture(scope="module")
def one_thread():
    """For tests of tiny models: one thread avoids OpenMP's spin-waiting on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
