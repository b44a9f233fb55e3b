"""Flags several commands share: was a flag typed, and `--engine/--address/--gpus-per-task`."""

from __future__ import annotations

from flowcore.errors import UserError


def flag_given(ctx, name: str) -> bool:
    """Whether the command line gave the flag of parameter `name` (not left at its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


def engine_from_flags(name: str, address: str | None, gpus_per_task: float | None, device: str,
                      hint: str = ""):
    """None for `--engine local`, else a flowcore.ray_engine.RayEngine checked against `device`
    (`hint`: flags the GPU message suggests); UserError for flags that cannot work together
    or a missing Ray. Shared by `mespot extract` and `mespot train`."""
    if name == "local":
        if address is not None or gpus_per_task is not None:
            raise UserError("--address and --gpus-per-task go with --engine ray")
        return None
    if name != "ray":
        raise UserError(f"--engine must be 'local' or 'ray', got {name!r}")
    from flowcore.ray_engine import RayEngine, import_ray

    try:
        import_ray()
        engine = RayEngine(address=address, gpus_per_task=gpus_per_task)
        engine.gpus_for(device, hint)
    except (ImportError, ValueError) as err:
        raise UserError(str(err)) from None
    return engine
