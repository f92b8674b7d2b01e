//! `/v1/uploads`: input files that job parameters refer to.

use futures::TryStreamExt;
use poem::Body;
use poem_openapi::param::Query;
use poem_openapi::payload::{Binary, Json};
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::problem::ErrorResponse;
use super::ApiTags;
use crate::service::Gateway;

/// A stored upload.
#[derive(Debug, Object)]
#[oai(example)]
pub struct UploadView {
    /// Value to put in a job parameter, such as `uploads/<id>/photo.jpg`.
    pub reference: String,
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

impl Example for UploadView {
    fn example() -> Self {
        Self {
            reference: "uploads/0190f5c4-8a8e-7c3b-9a4e-2f1d6b8c9e01/photo.jpg".into(),
            name: "photo.jpg".into(),
            size: 2_483_117,
        }
    }
}

#[derive(ApiResponse)]
enum UploadResponse {
    /// The file is stored.
    #[oai(status = 201)]
    Created(Json<UploadView>),
}

/// Operations on uploads.
pub struct UploadsApi {
    /// The gateway.
    pub gateway: Gateway,
}

#[OpenApi(prefix_path = "/v1/uploads", tag = "ApiTags::Uploads")]
impl UploadsApi {
    /// Upload an input file
    ///
    /// Streams the request body to storage and returns a reference that job
    /// parameters can take. Bodies above the gateway's upload limit are
    /// rejected with `413`.
    #[oai(path = "/", method = "post", operation_id = "uploadFile")]
    async fn upload(
        &self,
        /// File name, such as `photo.jpg`: no slashes, no leading dot.
        #[oai(validator(min_length = 1, max_length = 255))]
        name: Query<String>,
        /// The file's bytes.
        body: Binary<Body>,
    ) -> Result<UploadResponse, ErrorResponse> {
        let stream = body.0.into_bytes_stream().map_err(std::io::Error::other);
        let upload = self.gateway.upload(&name.0, Box::pin(stream)).await?;
        Ok(UploadResponse::Created(Json(UploadView {
            reference: upload.reference,
            name: upload.name,
            size: upload.size,
        })))
    }
}
