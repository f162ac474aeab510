from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
for folder in (ROOT / "examples", FIXTURES):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
# workers inherit this, so they can import the fixture plugins and model factories too
os.environ["PYTHONPATH"] = os.pathsep.join([str(FIXTURES), str(ROOT / "examples"), os.environ.get("PYTHONPATH", "")])


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own step cache unless it shares one on purpose."""
    monkeypatch.setenv("HUB_CACHE", str(tmp_path_factory.mktemp("cache")))
    from hub.plugins import reset_catalog

    reset_catalog()
    yield
    reset_catalog()


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory) -> dict[str, Path]:
    """A DigitsNet trained for a few epochs, saved with torch.export, with calibration and held-out samples."""
    import torch
    from digits import digits_arrays, train

    folder = tmp_path_factory.mktemp("digits")
    images, labels = digits_arrays()
    model = train(images[:1400], labels[:1400], epochs=4)
    torch.export.save(torch.export.export(model, (torch.from_numpy(images[:1]),)), folder / "digits.pt2")
    np.savez(folder / "calib.npz", image=images[:64])
    np.savez(folder / "heldout.npz", image=images[1400:1464])
    return {"model": folder / "digits.pt2", "calibration": folder / "calib.npz",
            "heldout": folder / "heldout.npz", "module": model, "images": images}
