"""SynthFaces: the procedurally rendered face set that facemtl ships as its default dataset.

No face dataset can be downloaded everywhere, so facemtl draws its own: identities with stable
traits, per-image pose, expression, accessories and lighting, and exact labels (5 landmarks, face
box, 29 CelebA-named attributes, expression, head pose) that come from the same 3-D projection as
the pixels. See ``docs/synthfaces.md``.
"""

from facemtl.data.synth.render import (
    SYNTH_ATTRIBUTES,
    SynthConfig,
    render_face_with_attributes,
    render_sample,
    render_scene,
)

__all__ = ["SYNTH_ATTRIBUTES", "SynthConfig", "render_face_with_attributes", "render_sample", "render_scene"]
