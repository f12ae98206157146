"""docs/extending.md's worked examples run as written: its Python blocks, in order, in a fresh interpreter
(a subprocess, so that the names they register do not leak into the other tests' registries)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"


def blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_the_page_has_an_example_per_registry():
    text = "\n".join(blocks())
    for call in ("register_task", "BACKBONES.register", "WEIGHTINGS.register", "ARCHITECTURES.register", "READERS.register"):
        assert call in text, f"docs/extending.md has no example calling {call}"


def test_every_example_runs(tmp_path):
    script = tmp_path / "extending.py"
    script.write_text("\n\n".join(blocks()) + '\nprint("all examples ran")\n', encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "all examples ran" in res.stdout
