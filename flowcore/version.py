"""The version of the mespot distribution (flowcore, spotting and mespot ship together).

It lives at the bottom layer because stores and runs record it; `mespot.__version__` is this.
"""

__version__ = "0.1.0"


def git_commit() -> str | None:
    """The git commit of the source tree this package runs from (with "+dirty" when it has
    uncommitted changes), None when it is not a git checkout (an installed wheel) or git is
    missing. Runs record it beside the version."""
    import subprocess
    from pathlib import Path

    here = Path(__file__).resolve().parent.parent
    if not (here / ".git").exists():  # an installed copy, perhaps inside another repository
        return None
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
