"""`mespot serve`: extraction, training, evaluation and spotting as jobs of a small HTTP service.

    browser / `mespot submit`, `mespot jobs` --HTTP + token--> app.py (FastAPI)
        --> jobs.py (one SQLite file: the queue, progress, leases)
        <-- scheduler.py (one slot per GPU or group of cores: claims the next job, starts
            runner.py in its own process) --> tasks.py (the only module calling the library)

Layer: top (imports flowcore and spotting; nothing below imports it); its commands are in
mespot.commands (`serve`, and `jobs` for `mespot jobs/submit`). The client side (`client.py`
and mespot.commands.jobs) needs only the standard library; the server needs the `serve` extra
(fastapi, uvicorn, prometheus-client).
"""
