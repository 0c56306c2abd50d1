"""Shared pytest configuration: hardware markers skip cleanly where the hardware is absent, and
the fixtures many modules share live here. The code under test is the installed `vacelive`
package (an editable install maps the repository's folders into it); the developer tools in
scripts/ (doc and layout generators, the pattern engine) import as top-level modules."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


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


@pytest.fixture(scope="module")
def single_thread():
    """torch on one thread for a whole module: tiny models and convs are several times faster
    single-threaded on a small box, and parallel test runs do not fight for its cores.
    Use with `pytestmark = pytest.mark.usefixtures("single_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
