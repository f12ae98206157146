"""Entry point: ``facemtl`` and its subcommands."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from facemtl import __version__
from facemtl.cli import info, prepare, train


def _plain_flags(params: list) -> None:
    """No type tag after an on/off flag: typer >= 0.17 writes ``<bool>`` beside ``--force``
    (a flag takes no value), and an empty metavar is what it shows instead."""
    for p in params:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""


class Group(TyperGroup):
    """The ``facemtl`` command group: plain flags in every command's help."""

    def get_command(self, ctx, cmd_name):  # type: ignore[no-untyped-def]
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None and not isinstance(cmd, TyperGroup):
            _plain_flags([*cmd.params, cmd.get_help_option(ctx)])
        return cmd

    def get_params(self, ctx):  # type: ignore[no-untyped-def]
        params = super().get_params(ctx)
        _plain_flags(params)
        return params


HELP = """Multi-task learning on faces: prepare data, train, evaluate, ablate, correlate, export.

[bold]Examples[/]

  [cyan]facemtl train[/]                               default recipe on SynthFaces
  [cyan]facemtl train --recipe tcdcn --epochs 3[/]     a paper's recipe, options win
  [cyan]facemtl evaluate runs/default[/]               every metric of a run
  [cyan]facemtl prepare celeba --root ~/data/celeba[/]  -> data/celeba.h5
  [cyan]facemtl ablate --tasks landmarks,pose --main landmarks --dry-run[/]

Every command has --help; README.md and docs/ have the rest.
"""

app = typer.Typer(
    name="facemtl",
    help=HELP,
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    cls=Group,
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


app.add_typer(prepare.app, name="prepare", cls=Group)
app.command("info")(info.info)
app.command("train")(train.train)

from facemtl.cli import export as _export
from facemtl.cli import predict as _predict

app.command("export")(_export.export)
app.command("predict")(_predict.predict)

from facemtl.cli import ablate as _ablate
from facemtl.cli import correlate as _correlate
from facemtl.cli import evaluate as _evaluate
from facemtl.cli import plot as _plot

app.command("evaluate")(_evaluate.evaluate)
app.command("ablate")(_ablate.ablate)
app.command("correlate")(_correlate.correlate)
app.command("plot")(_plot.plot)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
