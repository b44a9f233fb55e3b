"""The subcommands of `mespot`, one module each: parse the flags, call the library, print.

`mespot.cli` wires them up. What a command computes lives in the library (`mespot.api` and the
`spotting` and `flowcore` packages it calls); what it draws (progress bars, tables) in
`mespot.progress` and here.
"""
