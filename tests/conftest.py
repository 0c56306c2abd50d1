"""Shared pytest configuration: hardware markers skip cleanly where the hardware is absent."""
import sys

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_spout = pytest.mark.skip(reason="needs SpoutGL on Windows")
    skip_syphon = pytest.mark.skip(reason="needs syphon-python on macOS")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "spout" in item.keywords and sys.platform != "win32":
            item.add_marker(skip_spout)
        if "syphon" in item.keywords and sys.platform != "darwin":
            item.add_marker(skip_syphon)
