//! `/healthz` and `/readyz` for probes.

use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::problem::ErrorResponse;
use super::ApiTags;
use crate::service::Gateway;

/// Health of the gateway.
#[derive(Debug, Object)]
#[oai(example)]
pub struct Health {
    /// `ok` when healthy.
    pub status: String,
}

impl Example for Health {
    fn example() -> Self {
        Self { status: "ok".into() }
    }
}

#[derive(ApiResponse)]
enum HealthResponse {
    /// Healthy.
    #[oai(status = 200)]
    Ok(Json<Health>),
}

/// Probe endpoints.
pub struct HealthApi {
    /// The gateway.
    pub gateway: Gateway,
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness probe
    ///
    /// Answers `200` while the process serves HTTP; it checks no dependency,
    /// so a storage outage does not get the gateway restarted.
    // The operation itself never fails, but it declares the shared error
    // responses because the middleware in front of it can still reject a
    // request, for example with `413` for an oversized body.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> Result<HealthResponse, ErrorResponse> {
        Ok(HealthResponse::Ok(Json(Health { status: "ok".into() })))
    }

    /// Readiness probe
    ///
    /// Answers `200` when the store can be read and written and the executor
    /// takes work, `503` with the cause otherwise.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self) -> Result<HealthResponse, ErrorResponse> {
        self.gateway.check().await?;
        Ok(HealthResponse::Ok(Json(Health { status: "ok".into() })))
    }
}
