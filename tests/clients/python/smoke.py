"""Exercise the Python client generated from openapi/openapi.yaml against a running gateway.

Usage: python smoke.py BASE_URL, such as http://127.0.0.1:8080

The client is the package `jobgate_client` that scripts/generate-clients.sh
writes to tests/clients/python/generated/. The gateway must serve the
`thumbnail` template. Exits non-zero with a message on the first failed check.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "generated"))

import httpx  # noqa: E402
from jobgate_client import Client  # noqa: E402
from jobgate_client.api.jobs import get_job, get_job_output, list_jobs, submit_job  # noqa: E402
from jobgate_client.api.uploads import upload_file  # noqa: E402
from jobgate_client.models import JobList, JobState, JobView, Problem, SubmitJob, UploadView  # noqa: E402
from jobgate_client.models.submit_job_labels import SubmitJobLabels  # noqa: E402
from jobgate_client.types import UNSET, File  # noqa: E402

FIXTURE_PNG = HERE.parent.parent / "fixtures" / "gradient-64x48.png"
SIGNATURES = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff",
}
JOB_TIMEOUT_SECONDS = 60.0
POLL_INTERVAL_SECONDS = 0.2
PAGE_SIZE = 2
EXTRA_JOBS = 4


class CheckFailed(Exception):
    """A check of the gateway's behaviour failed."""


def check(condition: object, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def step(message: str) -> None:
    print(f"smoke.py: {message}", flush=True)


def upload(client: Client, name: str, data: bytes) -> str:
    response = upload_file.sync_detailed(
        client=client, name=name, body=File(payload=io.BytesIO(data), file_name=name)
    )
    check(response.status_code == 201, f"upload of {name} returned {response.status_code}: {response.content!r}")
    view = response.parsed
    check(isinstance(view, UploadView), f"upload of {name} returned {view!r}, expected an UploadView")
    check(view.size == len(data), f"upload stored {view.size} bytes, expected {len(data)}")
    return view.reference


def submit_thumbnail(client: Client, image: str, formats: list[str]) -> JobView:
    labels = SubmitJobLabels()
    labels["client"] = "python-smoke"
    body = SubmitJob(
        template="thumbnail",
        parameters={"images": [image], "sizes": [32], "formats": formats},
        labels=labels,
    )
    response = submit_job.sync_detailed(client=client, body=body)
    check(response.status_code == 202, f"submit returned {response.status_code}: {response.content!r}")
    job = response.parsed
    check(isinstance(job, JobView), f"submit returned {job!r}, expected a JobView")
    location = response.headers.get("Location")
    check(location == f"/v1/jobs/{job.id}", f"submit returned Location {location}, expected /v1/jobs/{job.id}")
    return job


def wait_for_success(client: Client, job_id: str) -> JobView:
    deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
    while True:
        response = get_job.sync_detailed(job_id, client=client)
        job = response.parsed
        check(isinstance(job, JobView), f"get job {job_id} returned {response.status_code}: {response.content!r}")
        if job.state == JobState.SUCCEEDED:
            return job
        check(
            job.state in (JobState.QUEUED, JobState.RUNNING),
            f"job {job_id} ended {job.state.value} (reason {job.reason}): {job.message}",
        )
        check(time.monotonic() < deadline, f"job {job_id} is still {job.state.value} after {JOB_TIMEOUT_SECONDS} s")
        time.sleep(POLL_INTERVAL_SECONDS)


def check_outputs(client: Client, base_url: str, job: JobView) -> None:
    check(len(job.outputs) == 2, f"job {job.id} has {len(job.outputs)} outputs, expected 2")
    for output in job.outputs:
        signature = SIGNATURES.get(output.content_type)
        check(signature, f"output {output.name} has unexpected content type {output.content_type}")

        response = get_job_output.sync_detailed(str(job.id), output.name, client=client)
        check(response.status_code == 200, f"download of {output.name} returned {response.status_code}")
        data = response.parsed.payload.read()
        check(len(data) == output.size, f"{output.name} has {len(data)} bytes, the job view says {output.size}")
        check(data.startswith(signature), f"{output.name} does not start with the {output.content_type} signature")

        # Web apps link to `url` directly, so it must serve the same bytes.
        linked = httpx.get(httpx.URL(base_url).join(output.url))
        check(linked.status_code == 200, f"GET {output.url} returned {linked.status_code}")
        check(linked.content == data, f"GET {output.url} returned other bytes than the typed download of {output.name}")


def list_all_job_ids(client: Client) -> list[str]:
    ids: list[str] = []
    cursor = UNSET
    page = 1
    while True:
        response = list_jobs.sync_detailed(client=client, limit=PAGE_SIZE, cursor=cursor)
        jobs = response.parsed
        check(isinstance(jobs, JobList), f"list page {page} returned {response.status_code}: {response.content!r}")
        check(len(jobs.jobs) <= PAGE_SIZE, f"list page {page} has {len(jobs.jobs)} jobs, limit was {PAGE_SIZE}")
        ids.extend(str(job.id) for job in jobs.jobs)
        if jobs.next_cursor is UNSET:
            return ids
        check(len(jobs.jobs) == PAGE_SIZE, f"list page {page} has a next_cursor but only {len(jobs.jobs)} jobs")
        check(page < 1000, "list pagination did not end after 1000 pages")
        cursor = jobs.next_cursor
        page += 1


def check_pagination(client: Client, submitted: list[str]) -> None:
    paged = list_all_job_ids(client)
    check(len(set(paged)) == len(paged), f"pages repeat a job: {paged}")
    for job_id in submitted:
        check(job_id in paged, f"job {job_id} was submitted but no page lists it")
    check(paged == sorted(paged, reverse=True), f"pages are not newest first: {paged}")

    response = list_jobs.sync_detailed(client=client, limit=200)
    single = response.parsed
    check(isinstance(single, JobList), f"list with limit 200 returned {response.status_code}")
    check(single.next_cursor is UNSET, "more than 200 jobs exist, so the single-page comparison cannot run")
    single_ids = [str(job.id) for job in single.jobs]
    check(
        single_ids == paged,
        f"pages of {PAGE_SIZE} list {len(paged)} jobs, one page of 200 lists {len(single_ids)}: a job was skipped",
    )


def check_validation_problem(client: Client) -> None:
    body = SubmitJob(
        template="thumbnail",
        parameters={"images": ["not-an-upload"], "sizes": [8], "formats": ["gif"]},
    )
    response = submit_job.sync_detailed(client=client, body=body)
    check(response.status_code == 400, f"invalid parameters returned {response.status_code}, expected 400")
    content_type = response.headers.get("Content-Type")
    check(
        content_type == "application/problem+json",
        f"invalid parameters returned Content-Type {content_type}",
    )
    problem = response.parsed
    check(isinstance(problem, Problem), f"invalid parameters returned {problem!r}, expected a Problem")
    expected_type = "https://jobgate.dev/problems/invalid-parameters"
    check(problem.type_ == expected_type, f"problem type is {problem.type_}, expected {expected_type}")
    check(problem.status == 400, f"problem status is {problem.status}, expected 400")
    errors = [] if problem.errors is UNSET else problem.errors
    fields = sorted(entry.field for entry in errors)
    expected = ["/parameters/formats/0", "/parameters/images/0", "/parameters/sizes/0"]
    check(fields == expected, f"problem lists fields {fields}, expected {expected}")
    check(all(entry.message for entry in errors), "a field problem has an empty message")


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python smoke.py BASE_URL (such as http://127.0.0.1:8080)", file=sys.stderr)
        return 2
    base_url = sys.argv[1]
    # Unexpected status codes raise instead of returning None, so a missing
    # declaration in the document fails the run.
    client = Client(base_url=base_url, raise_on_unexpected_status=True, timeout=httpx.Timeout(30.0))

    try:
        step(f"uploading {FIXTURE_PNG}")
        reference = upload(client, "gradient.png", FIXTURE_PNG.read_bytes())

        step("submitting a thumbnail job and following it to success")
        job = submit_thumbnail(client, reference, ["jpeg", "png"])
        done = wait_for_success(client, str(job.id))

        step(f"downloading the outputs of job {done.id}")
        check_outputs(client, base_url, done)

        step(f"submitting {EXTRA_JOBS} more jobs and paging through GET /v1/jobs?limit={PAGE_SIZE}")
        submitted = [str(job.id)]
        for _ in range(EXTRA_JOBS):
            submitted.append(str(submit_thumbnail(client, reference, ["png"]).id))
        for job_id in submitted:
            wait_for_success(client, job_id)
        check_pagination(client, submitted)

        step("submitting invalid parameters and decoding the problem details")
        check_validation_problem(client)
    except CheckFailed as error:
        print(f"smoke.py: FAILED: {error}", file=sys.stderr)
        return 1

    step("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
