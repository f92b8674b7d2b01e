//! A fake Kubernetes API server for jobgate's tests, with a job controller
//! and a kubelet simulator that runs pods as local processes.
//!
//! Layout:
//! - [`cluster`]: [`FakeCluster`], which starts everything, writes
//!   kubeconfigs and exposes the fault knobs and RBAC records;
//! - `api`, `watch`, `logs`, `discovery`: the HTTP front, serving discovery,
//!   CRUD, merge patch, watch streams and `pods/log`;
//! - [`store`]: objects with a global `resourceVersion` and watch history;
//! - [`objects`], [`selector`], [`error`]: defaulting, validation,
//!   selectors and `Status` bodies as the real API server writes them;
//! - [`rbac`]: bearer tokens and the gateway's Role;
//! - `controller`, `kubelet`, `env`, `events`: the job controller, garbage
//!   collector, TTL controller, scheduler and kubelet;
//! - [`faults`]: fault injection.
//!
//! A request flows from the API front, after authentication, RBAC and any
//! injected fault, into the store; the controllers react to store changes
//! and write pods, statuses and events back into it.

mod api;
pub mod cluster;
mod controller;
mod discovery;
mod env;
pub mod error;
mod events;
pub mod faults;
mod kubelet;
mod logs;
pub mod objects;
pub mod quantity;
pub mod rbac;
pub mod resource;
pub mod selector;
pub mod store;
mod watch;

pub use cluster::{FakeCluster, Options, StartError, User};
pub use faults::Faults;
pub use rbac::Access;
pub use resource::Resource;
pub use kubelet::{NODE_IP, NODE_NAME};
