//! jobgate: an HTTP gateway that lets a web application hand heavy work
//! (file conversion, image processing, reports) to Kubernetes Jobs created
//! from templates, or to local processes on one machine, and follow it to
//! its outputs.
//!
//! # Layout
//!
//! | module | concept |
//! | --- | --- |
//! | [`api`] | HTTP operations (poem-openapi), problem details, Swagger UI |
//! | [`service`] | the gateway's operations, independent of HTTP |
//! | [`catalog`] | templates: loading, parameter schemas, rendering Jobs |
//! | [`decorate`] | what the gateway sets on every Job: name, labels, worker env |
//! | [`executor`] | running Jobs: the trait and the local executor |
//! | [`store`] | object storage: the trait and the filesystem store |
//! | [`status`] | the job view: executor state joined with progress and results, cached |
//! | [`job`] | job ids, states and failure reasons |
//! | [`config`], [`server`], [`cli`], [`telemetry`] | start-up, serving, command line, logs |
//!
//! # How a job flows
//!
//! `POST /v1/jobs` reaches [`service::Gateway::submit`]: the [`catalog`]
//! validates the parameters against the template's schema and renders its
//! `job.yaml` into a `batch/v1` Job, [`decorate`] adds the id, labels and
//! worker environment, the request record goes to the [`store`], and the
//! [`executor`] starts the Job. The worker writes `progress.json`,
//! outputs and `result.json` to the store. `GET /v1/jobs/{id}` asks
//! [`status`], which joins the executor's state with those documents
//! through a cache. When the executor reports the job terminal, the gateway
//! writes the final view to `status.json`, which answers from then on.

pub mod api;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod decorate;
pub mod executor;
pub mod job;
pub mod openapi;
pub mod server;
pub mod service;
pub mod status;
pub mod store;
pub mod telemetry;
