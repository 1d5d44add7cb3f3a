"""Background jobs in the workspace and the API: start one, follow its progress, read its result or why it failed.

``POST /api/v1/jobs`` ``{tenant, kind, args, rerun}`` answers 202 with the job (the same request the same day is the
same job: 202 with the existing one, run again if it failed and ``rerun`` is true); ``GET /api/v1/jobs[?tenant=]``
lists the newest jobs of the user's tenants, ``GET /api/v1/jobs/{id}`` one of them. A tenant the user holds no role
in, and another tenant's job, answer 404; a kind the user's roles may not start
(:func:`services.workspace.roles.may_start`) 403; an unknown kind or arguments the kind refuses 422. The page
``/t/{tenant}/jobs`` lists the tenant's jobs, refreshed by htmx every few seconds while one is queued or running, and
offers the kinds the user may start.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from services.workspace.api import ports_of, require_tenant
from services.workspace.auth import Principal, api_user, check_csrf, page_user
from services.workspace.pages import render
from services.workspace.ports import JobLine, JobRequestRefused, JobsPort
from services.workspace.roles import may_start

router = APIRouter(prefix="/api/v1", tags=["jobs"])
pages = APIRouter(include_in_schema=False)
ApiUser = Annotated[Principal, Depends(api_user)]
PageUser = Annotated[Principal, Depends(page_user)]
POLL_SECONDS = 3


class JobRequest(BaseModel):
    tenant: str = Field(max_length=64)
    kind: str = Field(max_length=64, examples=["escalation.replay"])
    args: dict[str, Any] = Field(default_factory=dict, description="the kind's arguments (see `relance jobs`)")
    rerun: bool = Field(default=False, description="run the job again if it failed (or resend a lost one)")


class Progress(BaseModel):
    done: int
    total: int | None
    note: str


class JobView(BaseModel):
    id: str
    tenant: str
    kind: str
    args: dict[str, Any]
    status: str  # queued | running | done | failed
    progress: Progress
    result: dict[str, Any] | None
    error: str | None  # why it failed (or, while retried, the last transient error)
    attempts: int
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobList(BaseModel):
    jobs: list[JobView]


def job_view(job: JobLine) -> JobView:
    return JobView.model_validate(job.as_json())


def jobs_of(request: Request) -> JobsPort:
    port = ports_of(request).jobs
    if port is None:
        raise HTTPException(status_code=503, detail="background jobs are not configured in this workspace")
    return port


def start(
    port: JobsPort, user: Principal, tenant: str, kind: str, args: dict[str, Any], rerun: bool = False
) -> tuple[JobLine, bool]:
    """Check the tenant (404), the kind (422) and the user's roles (403), then enqueue."""
    require_tenant(user, tenant)
    if kind not in {name for name, _ in port.kinds()}:
        raise HTTPException(status_code=422, detail=f"no job kind {kind!r}")
    if not may_start(user.roles_in(tenant), kind):
        raise HTTPException(status_code=403, detail=f"your roles in {tenant} do not allow starting {kind}")
    try:
        return port.enqueue(tenant, kind, args, user.login, rerun)
    except JobRequestRefused as refused:
        raise HTTPException(status_code=refused.status, detail=refused.reason) from None


def visible_job(port: JobsPort, user: Principal, job_id: str) -> JobLine:
    job = port.get(job_id)
    if job is None or not user.roles_in(job.tenant):
        raise HTTPException(status_code=404, detail="not found")
    return job


# ----------------------------------------------------------------------------------------------- API
@router.post(
    "/jobs",
    status_code=202,
    response_model=JobView,
    responses={
        403: {"description": "your roles in the tenant do not allow starting this kind"},
        404: {"description": "no such tenant for you"},
        409: {"description": "the job id names another job"},
        422: {"description": "an unknown kind, or arguments the kind refuses, and why"},
        503: {"description": "the broker did not take the job (it stays queued) or jobs are not configured"},
    },
)
def enqueue_job(request: Request, body: JobRequest, user: ApiUser) -> JSONResponse:
    job, _ = start(jobs_of(request), user, body.tenant, body.kind, body.args, body.rerun)
    return JSONResponse(job_view(job).model_dump(mode="json"), status_code=202)


@router.get("/jobs", response_model=JobList)
def list_jobs(
    request: Request, user: ApiUser, tenant: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> JobList:
    if tenant is not None:
        require_tenant(user, tenant)
    tenants = [tenant] if tenant is not None else list(user.tenants())
    return JobList(jobs=[job_view(j) for j in jobs_of(request).recent(tenants, limit)])


@router.get("/jobs/{job_id}", response_model=JobView)
def get_job(request: Request, job_id: str, user: ApiUser) -> JobView:
    return job_view(visible_job(jobs_of(request), user, job_id))


# ----------------------------------------------------------------------------------------------- page
@pages.get("/t/{tenant}/jobs")
def jobs_page(request: Request, tenant: str, user: PageUser, error: str = "") -> HTMLResponse:
    require_tenant(user, tenant)
    port = jobs_of(request)
    rows = list(port.recent([tenant], 100))
    roles = user.roles_in(tenant)
    context = {
        "tenant": tenant,
        "jobs": rows,
        "kinds": [(kind, summary) for kind, summary in port.kinds() if may_start(roles, kind)],
        "polling": any(not job.finished for job in rows),
        "poll_seconds": POLL_SECONDS,
        "error": error,
    }
    name = "jobs_table.html" if request.headers.get("HX-Request") == "true" else "jobs.html"
    return render(request, name, context, user)


@pages.post("/t/{tenant}/jobs", dependencies=[Depends(check_csrf)])
async def jobs_start(request: Request, tenant: str, user: PageUser) -> Response:
    form = await request.form()
    kind = str(form.get("kind", ""))
    try:
        start(jobs_of(request), user, tenant, kind, {})
    except HTTPException as refused:
        if refused.status_code in (403, 404):
            raise
        return jobs_page(request, tenant, user, error=str(refused.detail))
    return RedirectResponse(f"/t/{tenant}/jobs", status_code=303)
