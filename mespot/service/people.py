"""What several people sharing one server need: their own tokens (made, listed and revoked by
the admin, the holder of the server's own token), and jobs they can archive (hidden from the
queue) or delete with their files once they have ended. A job is deleted by whoever submitted
it, or by the admin; deleting "outputs" too removes the store or run folder the job made,
unless a queued or running job still uses it.
"""

from __future__ import annotations

import shutil

from flowcore.locations import location, remove_tree

from fastapi import Body, Depends, HTTPException
from fastapi.responses import JSONResponse

from mespot.service.jobs import JobStore
from mespot.service.users import ADMIN, UserRefused, Users


def add_routes(app, store: JobStore, users: Users, config, guarded, need_token) -> None:
    def admin_only(name: str = Depends(need_token)) -> str:
        if name != ADMIN:
            raise HTTPException(403, "only the admin (the server's own token) manages users")
        return name

    @app.exception_handler(UserRefused)
    async def refused(_request, exc: UserRefused):
        return JSONResponse({"ok": False, "status": exc.status, "error": str(exc)},
                            status_code=exc.status)

    @app.get("/api/whoami", dependencies=guarded, tags=["people"])
    def whoami(name: str = Depends(need_token)) -> dict:
        return {"name": name, "admin": name == ADMIN}

    @app.get("/api/users", dependencies=[Depends(admin_only)], tags=["people"])
    def list_users() -> dict:
        """Users with when their token was made, last used and revoked (never the tokens)."""
        return {"users": users.list()}

    @app.post("/api/users", dependencies=[Depends(admin_only)], status_code=201,
              tags=["people"])
    def add_user(name: str = Body(..., embed=True)) -> JSONResponse:
        """A new user; the answer holds their token, shown this once (only its hash is kept)."""
        return JSONResponse({"name": name, "token": users.add(name)}, status_code=201)

    @app.post("/api/users/{name}/revoke", dependencies=[Depends(admin_only)], tags=["people"])
    def revoke_user(name: str) -> dict:
        """The user's token stops working at once; their jobs keep their name."""
        return users.revoke(name)

    def ended_job_of(job_id: int, name: str):
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        if name != ADMIN and job.submitter != name:
            raise HTTPException(403, f"job {job_id} was submitted by "
                                     f"{job.submitter or 'the admin'}; only they or the admin "
                                     f"may change it")
        return job

    @app.post("/api/jobs/{job_id}/archive", dependencies=guarded, tags=["jobs"])
    def archive_job(job_id: int, undo: bool = False, name: str = Depends(need_token)) -> dict:
        """Hide a job from the queue (`undo`: show it again); GET /api/jobs?archived=true
        lists archived jobs too."""
        ended_job_of(job_id, name)
        store.archive(job_id, not undo)
        return store.get(job_id).to_json()

    @app.delete("/api/jobs/{job_id}", dependencies=guarded, tags=["jobs"])
    def delete_job(job_id: int, outputs: bool = False, name: str = Depends(need_token)) -> dict:
        """Delete an ended job and its folder (log, prediction); with `outputs`, also the store
        or run folder it made (refused while a queued or running job uses it)."""
        job = ended_job_of(job_id, name)
        if job.state not in ("done", "failed", "cancelled"):
            raise HTTPException(409, f"job {job_id} is {job.shown_state}: cancel it first")
        removed = []
        if outputs and job.makes:
            busy = [i for i in store.users_of(job.makes) if i != job_id]
            if busy:
                raise HTTPException(409, f"{_shown(config, job.makes)} is used by job(s) "
                                         f"{', '.join(f'#{i}' for i in busy)}")
            if location(job.makes).exists():
                remove_tree(job.makes)
                removed.append(_shown(config, job.makes))
        store.delete(job_id)
        folder = config.job_folder(job_id)
        if folder.exists():
            shutil.rmtree(folder)
            removed.append(f"jobs/{job_id} (log and job files)")
        return {"deleted": job_id, "removed": removed}


def _shown(config, path: str) -> str:
    """A path under the store root as users give it."""
    try:
        return location(path).relative_to(config.store_root).as_posix()
    except ValueError:
        return path
