"""``python -m facemtl``: the ``facemtl`` command without the console script (no venv activation needed)."""

from facemtl.cli.main import app

if __name__ == "__main__":
    app(prog_name="facemtl")
