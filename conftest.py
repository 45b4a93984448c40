import os

import pytest
import torch

# Chapters executed by nbval inherit these: vitlib.book.setup() picks quick mode under the tests, and
# vitlib behaves as while the book builds (no progress widgets; charts load the book's plotly.js),
# since the strict build renders this very execution (tests/executed_book.py).
os.environ.setdefault("VITLIB_UNDER_TEST", "1")
os.environ.setdefault("VITLIB_BOOK_BUILD", "1")

pytest_plugins = ["tests.executed_book"]


@pytest.fixture(scope="module")
def one_thread():
    """For tests of tiny models: one thread avoids OpenMP's spin-waiting on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
