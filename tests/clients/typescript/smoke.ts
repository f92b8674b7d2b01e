// Exercises the TypeScript client generated from openapi/openapi.yaml
// (openapi-typescript types with openapi-fetch) against a running gateway.
//
// Usage: tsx smoke.ts BASE_URL, such as http://127.0.0.1:8080
// The gateway must serve the `thumbnail` template. Exits non-zero with a
// message on the first failed check.

import { readFileSync } from "node:fs";
import createClient from "openapi-fetch";

import type { components, paths } from "./generated/schema.js";

type JobView = components["schemas"]["JobView"];
type Problem = components["schemas"]["Problem"];

const FIXTURE_PNG = new URL("../../fixtures/gradient-64x48.png", import.meta.url);
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const JPEG_SIGNATURE = [0xff, 0xd8, 0xff];
const JOB_TIMEOUT_MS = 60_000;
const POLL_INTERVAL_MS = 200;
const PAGE_SIZE = 2;
const EXTRA_JOBS = 4;

class CheckFailed extends Error {}

function check(condition: unknown, message: string): asserts condition {
  if (!condition) {
    throw new CheckFailed(message);
  }
}

function step(message: string): void {
  console.log(`smoke.ts: ${message}`);
}

const baseUrl = process.argv[2];
if (!baseUrl) {
  console.error("usage: tsx smoke.ts BASE_URL (such as http://127.0.0.1:8080)");
  process.exit(2);
}
const client = createClient<paths>({ baseUrl });

async function upload(name: string, bytes: Uint8Array): Promise<string> {
  const { data, error, response } = await client.POST("/v1/uploads", {
    params: { query: { name } },
    // The document types a binary body as a string; openapi-fetch sends any
    // BodyInit unchanged once the JSON serializer is replaced.
    body: bytes as unknown as string,
    bodySerializer: (body) => body as unknown as BodyInit,
    headers: { "Content-Type": "application/octet-stream" },
  });
  check(data, `upload of ${name} failed with ${response.status}: ${JSON.stringify(error)}`);
  check(response.status === 201, `upload returned ${response.status}, expected 201`);
  check(data.size === bytes.length, `upload stored ${data.size} bytes, expected ${bytes.length}`);
  return data.reference;
}

async function submitThumbnail(image: string, formats: ("jpeg" | "png")[]): Promise<JobView> {
  const { data, error, response } = await client.POST("/v1/jobs", {
    body: {
      template: "thumbnail",
      parameters: { images: [image], sizes: [32], formats },
      labels: { client: "typescript-smoke" },
    },
  });
  check(data, `submit failed with ${response.status}: ${JSON.stringify(error)}`);
  check(response.status === 202, `submit returned ${response.status}, expected 202`);
  check(
    response.headers.get("Location") === `/v1/jobs/${data.id}`,
    `submit returned Location ${response.headers.get("Location")}, expected /v1/jobs/${data.id}`,
  );
  return data;
}

async function waitForSuccess(id: string): Promise<JobView> {
  const deadline = Date.now() + JOB_TIMEOUT_MS;
  for (;;) {
    const { data, error, response } = await client.GET("/v1/jobs/{id}", { params: { path: { id } } });
    check(data, `get job ${id} failed with ${response.status}: ${JSON.stringify(error)}`);
    if (data.state === "succeeded") {
      return data;
    }
    check(
      data.state === "queued" || data.state === "running",
      `job ${id} ended ${data.state} (reason ${data.reason}): ${data.message}`,
    );
    check(Date.now() < deadline, `job ${id} is still ${data.state} after ${JOB_TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
}

function startsWith(bytes: Uint8Array, signature: number[]): boolean {
  return signature.every((byte, index) => bytes[index] === byte);
}

async function checkOutputs(job: JobView): Promise<void> {
  const expected: Record<string, number[]> = { "image/jpeg": JPEG_SIGNATURE, "image/png": PNG_SIGNATURE };
  check(job.outputs.length === 2, `job ${job.id} has ${job.outputs.length} outputs, expected 2`);
  for (const output of job.outputs) {
    const signature = expected[output.content_type];
    check(signature, `output ${output.name} has unexpected content type ${output.content_type}`);

    const { data, error, response } = await client.GET("/v1/jobs/{id}/outputs/{name}", {
      params: { path: { id: job.id, name: output.name } },
      parseAs: "arrayBuffer",
    });
    check(data, `download of ${output.name} failed with ${response.status}: ${JSON.stringify(error)}`);
    const bytes = new Uint8Array(data);
    check(bytes.length === output.size, `${output.name} has ${bytes.length} bytes, the job view says ${output.size}`);
    check(startsWith(bytes, signature), `${output.name} does not start with the ${output.content_type} signature`);

    // Web apps link to `url` directly, so it must serve the same bytes.
    const linked = await fetch(new URL(output.url, baseUrl));
    check(linked.ok, `GET ${output.url} returned ${linked.status}`);
    const linkedBytes = new Uint8Array(await linked.arrayBuffer());
    check(
      Buffer.from(linkedBytes).equals(Buffer.from(bytes)),
      `GET ${output.url} returned other bytes than the typed download of ${output.name}`,
    );
  }
}

async function listAllJobIds(): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | undefined;
  for (let page = 1; ; page++) {
    const { data, error, response } = await client.GET("/v1/jobs", {
      params: { query: { limit: PAGE_SIZE, cursor } },
    });
    check(data, `list page ${page} failed with ${response.status}: ${JSON.stringify(error)}`);
    check(data.jobs.length <= PAGE_SIZE, `list page ${page} has ${data.jobs.length} jobs, limit was ${PAGE_SIZE}`);
    ids.push(...data.jobs.map((job) => job.id));
    if (data.next_cursor === undefined) {
      return ids;
    }
    check(data.jobs.length === PAGE_SIZE, `list page ${page} has a next_cursor but only ${data.jobs.length} jobs`);
    check(page < 1000, "list pagination did not end after 1000 pages");
    cursor = data.next_cursor;
  }
}

async function checkPagination(submitted: string[]): Promise<void> {
  const paged = await listAllJobIds();
  check(new Set(paged).size === paged.length, `pages repeat a job: ${paged.join(", ")}`);
  for (const id of submitted) {
    check(paged.includes(id), `job ${id} was submitted but no page lists it`);
  }
  const newestFirst = [...paged].sort().reverse();
  check(paged.join() === newestFirst.join(), `pages are not newest first: ${paged.join(", ")}`);

  const { data, error, response } = await client.GET("/v1/jobs", { params: { query: { limit: 200 } } });
  check(data, `list with limit 200 failed with ${response.status}: ${JSON.stringify(error)}`);
  check(data.next_cursor === undefined, "more than 200 jobs exist, so the single-page comparison cannot run");
  const single = data.jobs.map((job) => job.id);
  check(
    single.join() === paged.join(),
    `pages of ${PAGE_SIZE} list ${paged.length} jobs, one page of 200 lists ${single.length}: a job was skipped`,
  );
}

async function checkValidationProblem(): Promise<void> {
  const { data, error, response } = await client.POST("/v1/jobs", {
    body: {
      template: "thumbnail",
      parameters: { images: ["not-an-upload"], sizes: [8], formats: ["gif"] },
    },
  });
  check(data === undefined, `invalid parameters were accepted as job ${data?.id}`);
  check(response.status === 400, `invalid parameters returned ${response.status}, expected 400`);
  check(
    response.headers.get("Content-Type") === "application/problem+json",
    `invalid parameters returned Content-Type ${response.headers.get("Content-Type")}`,
  );
  const problem: Problem = error;
  check(
    problem.type === "https://jobgate.dev/problems/invalid-parameters",
    `problem type is ${problem.type}, expected https://jobgate.dev/problems/invalid-parameters`,
  );
  check(problem.status === 400, `problem status is ${problem.status}, expected 400`);
  const fields = (problem.errors ?? []).map((entry) => entry.field).sort();
  const expected = ["/parameters/formats/0", "/parameters/images/0", "/parameters/sizes/0"];
  check(
    fields.join() === expected.join(),
    `problem lists fields ${JSON.stringify(fields)}, expected ${JSON.stringify(expected)}`,
  );
  check(
    (problem.errors ?? []).every((entry) => entry.message.length > 0),
    "a field problem has an empty message",
  );
}

async function main(): Promise<void> {
  step(`uploading ${FIXTURE_PNG.pathname}`);
  const png = new Uint8Array(readFileSync(FIXTURE_PNG));
  const reference = await upload("gradient.png", png);

  step("submitting a thumbnail job and following it to success");
  const job = await submitThumbnail(reference, ["jpeg", "png"]);
  const done = await waitForSuccess(job.id);

  step(`downloading the outputs of job ${done.id}`);
  await checkOutputs(done);

  step(`submitting ${EXTRA_JOBS} more jobs and paging through GET /v1/jobs?limit=${PAGE_SIZE}`);
  const submitted = [job.id];
  for (let i = 0; i < EXTRA_JOBS; i++) {
    submitted.push((await submitThumbnail(reference, ["png"])).id);
  }
  for (const id of submitted) {
    await waitForSuccess(id);
  }
  await checkPagination(submitted);

  step("submitting invalid parameters and decoding the problem details");
  await checkValidationProblem();

  step("all checks passed");
}

main().catch((error: unknown) => {
  if (error instanceof CheckFailed) {
    console.error(`smoke.ts: FAILED: ${error.message}`);
  } else {
    console.error("smoke.ts: FAILED with an unexpected error:", error);
  }
  process.exit(1);
});
