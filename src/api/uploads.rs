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

/// Where and how to upload a file directly to the storage.
#[derive(Debug, Object)]
pub struct PresignedUpload {
    /// Value to put in a job parameter once the file is uploaded.
    pub reference: String,
    /// URL to send the file's bytes to, with the given method, before `expires_at`.
    pub upload_url: String,
    /// HTTP method for `upload_url`: always `PUT`.
    pub method: String,
    /// When `upload_url` stops working.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

#[derive(ApiResponse)]
enum PresignResponse {
    /// The URL is ready; PUT the file's bytes to it.
    #[oai(status = 201)]
    Created(Json<PresignedUpload>),
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

    /// Get a presigned upload URL
    ///
    /// Reserves an upload reference and returns a URL that takes the file
    /// with a `PUT` straight to the storage, so large files bypass the
    /// gateway. The URL expires after the gateway's presign lifetime. A
    /// gateway whose store cannot sign URLs answers `409`; use
    /// `POST /v1/uploads` with it.
    #[oai(path = "/presigned", method = "post", operation_id = "presignUpload")]
    async fn presign(
        &self,
        /// File name, such as `photo.jpg`: no slashes, no leading dot.
        #[oai(validator(min_length = 1, max_length = 255))]
        name: Query<String>,
    ) -> Result<PresignResponse, ErrorResponse> {
        let expiry = self.gateway.limits().presign_expiry;
        match self.gateway.presign_upload(&name.0, expiry).await? {
            Some((upload, url)) => Ok(PresignResponse::Created(Json(PresignedUpload {
                reference: upload.reference,
                upload_url: url,
                method: "PUT".into(),
                expires_at: chrono::Utc::now() + chrono::Duration::from_std(expiry).unwrap_or_default(),
            }))),
            None => Err(ErrorResponse::from_problem(
                super::problem::Problem::new(
                    poem::http::StatusCode::CONFLICT,
                    "presign-unsupported",
                    "Presigned uploads not supported",
                    "this gateway's store cannot sign URLs; upload through POST /v1/uploads",
                ),
                None,
            )),
        }
    }
}
