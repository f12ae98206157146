"""A small SynthFaces cache shared by the engine tests (built once per test process)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory):
    from facemtl.data.synthetic import prepare_synthetic

    path = tmp_path_factory.mktemp("synth") / "synth.h5"
    # the engine tests check mechanics in a few dozen steps: an easy SynthFaces (0.1.0's framing, no
    # camera effects or photo backgrounds) lets every task beat chance that fast; learning on the
    # full default data is measured by the README's runs and the slow tests
    prepare_synthetic(path, num_images=1200, identities=40, sizes=(56, 112), seed=0, workers=1, num_scenes=4,
                      camera_effects=False, photo_background=0.0, face_scale=(0.62, 0.78))
    return path
