"""The `mespot` command line: a thin layer that parses flags and calls the library.

Each subcommand lives in the module of the stage it drives; this file only wires them up.
Errors the user can fix are printed as one `error: ...` line with exit code 2; a file system
error (a read-only folder, a full disk, a file where a folder should be) as one
`error: <file>: <what>` line with exit code 1. Help is plain text: rich markup would eat the
square brackets of "[default: 6]" and "mespot[ray]".
"""

from __future__ import annotations

import errno
import sys
from typing import Optional

import typer

from flowcore.version import __version__
from flowcore.errors import UserError
from flowcore.locations import unreachable

app = typer.Typer(
    name="mespot",
    help="Spot facial macro- and micro-expressions in long face videos (AUW-GCN, end to end).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mespot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Spot facial macro- and micro-expressions in long face videos (AUW-GCN, end to end)."""


def _register_commands() -> None:
    from mespot.commands.synth import synth_command

    app.command("synth")(synth_command)
    from mespot.commands.extract import extract_command

    app.command("extract")(extract_command)
    from mespot.commands.train import train_command

    app.command("train")(train_command)
    from mespot.commands.pretrain import pretrain_command

    app.command("pretrain")(pretrain_command)
    from mespot.commands.results import evaluate_command, predict_command, report_command

    app.command("evaluate")(evaluate_command)
    app.command("report")(report_command)
    app.command("predict")(predict_command)
    from mespot.commands.bench import bench_command

    app.command("bench")(bench_command)
    from mespot.commands.serve import serve_command

    app.command("serve")(serve_command)
    from mespot.commands.jobs import jobs_app, submit_app, users_app

    app.add_typer(jobs_app, name="jobs")
    app.add_typer(submit_app, name="submit")
    app.add_typer(users_app, name="users")


_register_commands()


def describe_os_error(err: OSError) -> str:
    """`<file>: <what>` for an OSError (the file it names, the system's reason)."""
    where = err.filename if err.filename is not None else ""
    if err.filename2 is not None:
        where = f"{where} -> {err.filename2}"
    what = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        what += " (disk full; free space and run the same command again to resume)"
    return f"{where}: {what}" if where else what


def main(argv: Optional[list[str]] = None) -> int:
    """Run the command line with `argv` (default: sys.argv[1:]); return the exit code."""
    try:
        # Without standalone mode, click returns the code of a typer.Exit instead of raising it.
        code = app(args=argv, prog_name="mespot", standalone_mode=False)
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        return 2
    except OSError as err:  # the file system refused: say which file and why, no traceback
        typer.echo(f"error: {describe_os_error(err)}", err=True)
        return 1
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except Exception as err:
        if unreachable(err):  # object storage gone: one line, nothing else lost
            typer.echo(f"error: object storage unreachable ({unreachable(err)}); what was "
                       f"complete is kept: run the same command again to resume", err=True)
            return 1
        # Usage errors (bad flag, missing argument): click's, or the copy of click that recent
        # typer versions vendor; both can show themselves and carry an exit code.
        if callable(getattr(err, "show", None)) and isinstance(
            getattr(err, "exit_code", None), int
        ):
            err.show()
            return err.exit_code
        raise
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
