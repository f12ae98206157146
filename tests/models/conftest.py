"""A small easy SynthFaces cache for the architecture training tests (built once per test process)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def arch_cache(tmp_path_factory):
    from facemtl.data.synthetic import prepare_synthetic

    path = tmp_path_factory.mktemp("synth_arch") / "synth.h5"
    # as tests/engine/conftest.py: the easy framing that lets every task beat chance in a few dozen steps
    prepare_synthetic(path, num_images=900, identities=30, sizes=(56,), seed=0, workers=1, num_scenes=4,
                      camera_effects=False, photo_background=0.0, face_scale=(0.62, 0.78))
    return path
