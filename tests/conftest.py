"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch

import benchmarks.studies  # noqa: F401  (the project's studies register themselves: their row kinds and metrics)


@pytest.fixture
def one_thread():
    """Run the test with one intra-op thread (timing ratios, or thousands of tiny ops), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
