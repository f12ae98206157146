"""Entry point: ``facemtl`` and its subcommands."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from facemtl import __version__
from facemtl.cli import info, prepare, train

app = typer.Typer(
    name="facemtl",
    help="Multi-task learning on faces: prepare data, train, evaluate, ablate, correlate, export.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"facemtl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = None,
) -> None:
    """facemtl: one network, several face tasks."""


app.add_typer(prepare.app, name="prepare")
app.command("info")(info.info)
app.command("train")(train.train)

from facemtl.cli import export as _export, predict as _predict  # noqa: E402

app.command("export")(_export.export)
app.command("predict")(_predict.predict)

from facemtl.cli import ablate as _ablate, correlate as _correlate, evaluate as _evaluate, plot as _plot  # noqa: E402

app.command("evaluate")(_evaluate.evaluate)
app.command("ablate")(_ablate.ablate)
app.command("correlate")(_correlate.correlate)
app.command("plot")(_plot.plot)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
