"""A small SynthFaces cache shared by the engine tests (built once per test process)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory):
    from facemtl.data.synthetic import prepare_synthetic

    path = tmp_path_factory.mktemp("synth") / "synth.h5"
    prepare_synthetic(path, num_images=1200, identities=40, sizes=(56, 112), seed=0, workers=1, num_scenes=4)
    return path
