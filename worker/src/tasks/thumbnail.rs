//! The `thumbnail` task: resizes uploaded images to thumbnails.
//!
//! Parameters (from `request.json`):
//!
//! | name | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `images` | array of upload references | required | store keys `uploads/<uuid>/<file name>` |
//! | `sizes` | array of integers, 16..=4096 | `[256, 1024]` | longest edge of each thumbnail, in pixels |
//! | `formats` | array of `"jpeg"`, `"png"`, `"webp"` | `["jpeg"]` | output formats |
//! | `quality` | integer, 1..=100 | 85 | JPEG quality |
//! | `max_pixels` | integer | 40000000 | maximum width × height of an input |
//!
//! Each image is fetched, its header checked against `max_pixels` before any
//! decoding, decoded with an allocation limit, rotated by its EXIF orientation,
//! and resized with a Lanczos3 filter, keeping the aspect ratio and never
//! upscaling. Outputs are named `<stem>-<size>.<ext>`; inputs with the same
//! stem get `-2`, `-3`, ... appended to the stem. WebP output is lossless,
//! because the `image` crate (0.25) only has a lossless WebP encoder, so WebP
//! thumbnails are larger than JPEG ones.
//!
//! Images are processed in parallel on rayon's pool, one thread per available
//! core (`RAYON_NUM_THREADS` overrides it). A failed image fails only its own
//! item; the job fails (exit 1, no result) only when every image failed.

use std::collections::HashSet;
use std::fs::File;
use std::io::BufWriter;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::runtime::Handle;

use super::{key_file_name, unique_name, Outcome};
use crate::job::{Job, JobError};
use crate::progress::error_chain;
use crate::store::{validate_key, StoreError};

/// Smallest allowed thumbnail edge, in pixels.
pub const MIN_SIZE: u32 = 16;
/// Largest allowed thumbnail edge, in pixels.
pub const MAX_SIZE: u32 = 4096;
/// Maximum number of images per job, so that one job fits its deadline.
pub const MAX_IMAGES: usize = 200;
/// Maximum number of sizes per job.
pub const MAX_SIZES: usize = 8;
/// Default `max_pixels`: 40 megapixels, above the resolution of most cameras.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;
/// Upper bound of `max_pixels`: 100 megapixels, which decode to 400 MB as RGBA.
pub const MAX_MAX_PIXELS: u64 = 100_000_000;
/// Bytes per pixel of the widest pixel type that `image` decodes (RGBA of f32),
/// used to turn `max_pixels` into a decoder allocation limit.
const MAX_BYTES_PER_PIXEL: u64 = 16;

/// An output image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// JPEG at the `quality` parameter.
    Jpeg,
    /// Lossless PNG.
    Png,
    /// Lossless WebP (the only WebP encoder in `image` 0.25).
    Webp,
}

impl OutputFormat {
    /// Returns the file extension.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
        }
    }
}

/// The task's parameters, as the `thumbnail` template's schema describes them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailParams {
    /// Upload references of the input images.
    pub images: Vec<String>,
    /// Longest edge of each thumbnail, in pixels.
    #[serde(default = "default_sizes")]
    pub sizes: Vec<u32>,
    /// Output formats.
    #[serde(default = "default_formats")]
    pub formats: Vec<OutputFormat>,
    /// JPEG quality, 1..=100.
    #[serde(default = "default_quality")]
    pub quality: u8,
    /// Maximum width × height of an input image.
    #[serde(default = "default_max_pixels")]
    pub max_pixels: u64,
}

fn default_sizes() -> Vec<u32> {
    vec![256, 1024]
}

fn default_formats() -> Vec<OutputFormat> {
    vec![OutputFormat::Jpeg]
}

fn default_quality() -> u8 {
    85
}

fn default_max_pixels() -> u64 {
    DEFAULT_MAX_PIXELS
}

impl ThumbnailParams {
    /// Checks the ranges and forms that deserialization does not, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.images.is_empty() || self.images.len() > MAX_IMAGES {
            return Err(format!(
                "parameter images must list 1 to {MAX_IMAGES} upload references, got {}",
                self.images.len()
            ));
        }
        for (index, image) in self.images.iter().enumerate() {
            validate_upload_reference(image)
                .map_err(|reason| format!("parameter images[{index}] {image:?} {reason}"))?;
        }

        if self.sizes.is_empty() || self.sizes.len() > MAX_SIZES {
            return Err(format!(
                "parameter sizes must list 1 to {MAX_SIZES} sizes, got {}",
                self.sizes.len()
            ));
        }
        let mut seen_sizes = HashSet::new();
        for (index, &size) in self.sizes.iter().enumerate() {
            if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
                return Err(format!(
                    "parameter sizes[{index}] is {size}; sizes must be from {MIN_SIZE} to {MAX_SIZE} pixels"
                ));
            }
            if !seen_sizes.insert(size) {
                return Err(format!("parameter sizes lists {size} twice"));
            }
        }

        if self.formats.is_empty() {
            return Err("parameter formats must list at least one format".into());
        }
        let mut seen_formats = HashSet::new();
        for format in &self.formats {
            if !seen_formats.insert(*format) {
                return Err(format!(
                    "parameter formats lists {:?} twice",
                    format.extension()
                ));
            }
        }

        if !(1..=100).contains(&self.quality) {
            return Err(format!(
                "parameter quality is {}; it must be from 1 to 100",
                self.quality
            ));
        }
        if !(1..=MAX_MAX_PIXELS).contains(&self.max_pixels) {
            return Err(format!(
                "parameter max_pixels is {}; it must be from 1 to {MAX_MAX_PIXELS}",
                self.max_pixels
            ));
        }
        Ok(())
    }
}

/// Checks the form `uploads/<uuid>/<file name>`, where the uuid is 36 characters
/// of lowercase hex digits and hyphens.
pub fn validate_upload_reference(key: &str) -> Result<(), String> {
    let form = "is not an upload reference of the form uploads/<uuid>/<file name>";
    let mut segments = key.split('/');
    let (Some("uploads"), Some(id), Some(name), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(form.into());
    };
    let id_is_valid = id.len() == 36
        && id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c) || c == '-');
    if !id_is_valid || name.is_empty() {
        return Err(form.into());
    }
    validate_key(key).map_err(|error| error.to_string())
}

/// Runs the task: validates parameters, processes every image, writes the result.
pub async fn run(job: &Job) -> Outcome {
    let params: ThumbnailParams = match job.parameters() {
        Ok(params) => params,
        Err(error) => return Outcome::invalid(error.to_string()),
    };
    if let Err(message) = params.validate() {
        return Outcome::invalid(format!("invalid {message}"));
    }

    let work_dir = match tempfile::Builder::new()
        .prefix("jobgate-thumbnail-")
        .tempdir()
    {
        Ok(dir) => dir,
        Err(error) => {
            return Outcome::failed(format!(
                "failed to create a working folder in {}: {error}",
                std::env::temp_dir().display()
            ))
        }
    };

    let total = params.images.len();
    job.progress().set_stage(Some("resize"));
    job.progress()
        .report_items(0, total as u64, format!("resizing {total} images"));

    let context = Context {
        job: job.clone(),
        runtime: Handle::current(),
        params: params.clone(),
        work_dir: work_dir.path().to_owned(),
        done: AtomicU64::new(0),
    };
    let items = match tokio::task::spawn_blocking(move || context.process_all()).await {
        Ok(items) => items,
        Err(error) => return Outcome::failed(format!("image processing stopped: {error}")),
    };

    let summary = summarize(&params, &items);
    let failed = items.iter().filter(|item| item.result.is_err()).count();
    if failed == total {
        let first_error = items
            .first()
            .and_then(|item| item.result.as_ref().err())
            .map(String::as_str)
            .unwrap_or("no error recorded");
        return Outcome::failed(format!(
            "all {total} images failed; the first: {}: {first_error}",
            items[0].input
        ));
    }

    match job.finish(summary).await {
        Ok(_) => Outcome::Succeeded,
        Err(error) => Outcome::failed(format!(
            "failed to write the result: {}",
            error_chain(&error)
        )),
    }
}

/// Outcome of one input image.
#[derive(Debug)]
struct ItemReport {
    input: String,
    result: Result<ResizedImage, String>,
}

/// A successfully processed image.
#[derive(Debug)]
struct ResizedImage {
    width: u32,
    height: u32,
    outputs: Vec<String>,
}

fn summarize(params: &ThumbnailParams, items: &[ItemReport]) -> serde_json::Value {
    let mut succeeded = Vec::new();
    let mut failed = Vec::new();
    for item in items {
        match &item.result {
            Ok(image) => succeeded.push(json!({
                "input": item.input,
                "width": image.width,
                "height": image.height,
                "outputs": image.outputs,
            })),
            Err(error) => failed.push(json!({"input": item.input, "error": error})),
        }
    }
    json!({
        "images": items.len(),
        "succeeded": succeeded.len(),
        "failed": failed,
        "items": succeeded,
        "sizes": params.sizes,
        "formats": params.formats,
    })
}

/// Everything that the rayon workers share.
struct Context {
    job: Job,
    runtime: Handle,
    params: ThumbnailParams,
    work_dir: PathBuf,
    done: AtomicU64,
}

impl Context {
    fn process_all(&self) -> Vec<ItemReport> {
        // Stems are assigned in input order before the parallel part, so output
        // names do not depend on which thread finishes first.
        let mut used = HashSet::new();
        let stems: Vec<String> = self
            .params
            .images
            .iter()
            .map(|input| unique_name(&output_stem(key_file_name(input)), &mut used))
            .collect();

        self.params
            .images
            .par_iter()
            .zip(stems.par_iter())
            .enumerate()
            .map(|(index, (input, stem))| self.process_item(index, input, stem))
            .collect()
    }

    fn process_item(&self, index: usize, input: &str, stem: &str) -> ItemReport {
        let file_name = key_file_name(input);
        let item_dir = self.work_dir.join(index.to_string());

        // A decoder that panics on a malformed file must fail only its own item.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.resize_image(input, stem, &item_dir)
        }))
        .unwrap_or_else(|panic| {
            Err(format!(
                "the image decoder panicked: {}",
                panic_message(&panic)
            ))
        });
        // The item's files are uploaded or useless now; the folder goes with the
        // working folder at the end if this fails.
        let _ = std::fs::remove_dir_all(&item_dir);

        let total = self.params.images.len() as u64;
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let message = match &result {
            Ok(_) => format!("resized {done} of {total}: {file_name}"),
            Err(error) => {
                tracing::warn!(job.id = %self.job.id(), input, %error, "image failed");
                format!("failed {done} of {total}: {file_name}")
            }
        };
        self.job.progress().report_items(done, total, message);

        ItemReport {
            input: input.to_owned(),
            result,
        }
    }

    fn resize_image(
        &self,
        input: &str,
        stem: &str,
        item_dir: &Path,
    ) -> Result<ResizedImage, String> {
        std::fs::create_dir_all(item_dir)
            .map_err(|error| format!("failed to create working folder: {error}"))?;
        let local = item_dir.join("input");
        self.runtime
            .block_on(self.job.fetch_input(input, &local))
            .map_err(|error| {
                if matches!(error, JobError::Store(StoreError::NotFound { .. })) {
                    "the upload was not found in the store".to_owned()
                } else {
                    format!("failed to fetch the upload: {}", error_chain(&error))
                }
            })?;

        let image = decode_with_limit(&local, self.params.max_pixels)?;
        let (width, height) = (image.width(), image.height());

        let mut sizes = self.params.sizes.clone();
        sizes.sort_unstable_by(|a, b| b.cmp(a));

        // Each size is resized from the previous, larger result: far cheaper than
        // resizing the full image again, and Lanczos3 keeps the quality.
        let mut source = image;
        let mut outputs = Vec::new();
        for size in sizes {
            let (target_width, target_height) = fit_within(width, height, size);
            if (source.width(), source.height()) != (target_width, target_height) {
                source = source.resize_exact(target_width, target_height, FilterType::Lanczos3);
            }
            for &format in &self.params.formats {
                let name = format!("{stem}-{size}.{}", format.extension());
                let path = item_dir.join(&name);
                encode(&source, format, self.params.quality, &path)
                    .map_err(|error| format!("failed to encode {name}: {error}"))?;
                self.runtime
                    .block_on(self.job.write_output_file(&name, &path))
                    .map_err(|error| {
                        format!("failed to write output {name}: {}", error_chain(&error))
                    })?;
                outputs.push(name);
            }
        }

        Ok(ResizedImage {
            width,
            height,
            outputs,
        })
    }
}

/// Decodes an image after checking its header against `max_pixels`.
///
/// The header check rejects decompression bombs (a small file that claims a
/// huge size) before any pixel memory is allocated. The allocation limit
/// guards the decode itself against headers that understate the data.
fn decode_with_limit(path: &Path, max_pixels: u64) -> Result<DynamicImage, String> {
    let open = || {
        ImageReader::open(path)
            .and_then(ImageReader::with_guessed_format)
            .map_err(|error| format!("failed to read the file: {error}"))
    };

    let reader = open()?;
    if reader.format().is_none() {
        return Err(
            "unsupported or unrecognised image format (expected JPEG, PNG, WebP, GIF, BMP or TIFF)"
                .into(),
        );
    }
    let (width, height) = reader
        .into_dimensions()
        .map_err(|error| format!("invalid image header: {error}"))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(format!(
            "the image is {width}x{height} = {pixels} pixels, more than max_pixels {max_pixels}"
        ));
    }

    let mut reader = open()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(max_pixels.saturating_mul(MAX_BYTES_PER_PIXEL));
    reader.limits(limits);

    let mut decoder = reader
        .into_decoder()
        .map_err(|error| format!("failed to decode: {error}"))?;
    let orientation = decoder
        .orientation()
        .map_err(|error| format!("failed to read the orientation: {error}"))?;
    let mut image = DynamicImage::from_decoder(decoder)
        .map_err(|error| format!("failed to decode: {error}"))?;
    image.apply_orientation(orientation);

    // 8-bit RGB or RGBA is what the encoders take, and converting once here is
    // cheaper than per size.
    Ok(if image.color().has_alpha() {
        DynamicImage::ImageRgba8(image.into_rgba8())
    } else {
        DynamicImage::ImageRgb8(image.into_rgb8())
    })
}

/// Returns the size that fits `width` × `height` within a square of `size`,
/// keeping the aspect ratio and never upscaling.
fn fit_within(width: u32, height: u32, size: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= size {
        return (width, height);
    }
    let scale = |edge: u32| {
        let scaled =
            (u64::from(edge) * u64::from(size) + u64::from(longest) / 2) / u64::from(longest);
        (scaled as u32).max(1)
    };
    (scale(width), scale(height))
}

fn encode(
    image: &DynamicImage,
    format: OutputFormat,
    quality: u8,
    path: &Path,
) -> Result<(), String> {
    let file = File::create(path).map_err(|error| error.to_string())?;
    let mut writer = BufWriter::new(file);
    let result = match format {
        OutputFormat::Jpeg => {
            // JPEG has no alpha channel, so transparent pixels are put on white.
            let rgb = flatten_on_white(image);
            JpegEncoder::new_with_quality(&mut writer, quality).encode_image(&rgb)
        }
        OutputFormat::Png => image.write_with_encoder(PngEncoder::new(&mut writer)),
        OutputFormat::Webp => image.write_with_encoder(WebPEncoder::new_lossless(&mut writer)),
    };
    result.map_err(|error| error.to_string())?;
    let file = writer.into_inner().map_err(|error| error.to_string())?;
    file.sync_all().map_err(|error| error.to_string())
}

fn flatten_on_white(image: &DynamicImage) -> RgbImage {
    let DynamicImage::ImageRgba8(rgba) = image else {
        return image.to_rgb8();
    };
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let blend = |channel: u8| {
            let alpha = u16::from(a);
            ((u16::from(channel) * alpha + 255 * (255 - alpha) + 127) / 255) as u8
        };
        image::Rgb([blend(r), blend(g), blend(b)])
    })
}

/// Turns an input file name into an output stem that passes `validate_output_name`.
fn output_stem(file_name: &str) -> String {
    let stem = Path::new(file_name)
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cleaned: String = stem
        .chars()
        .map(|c| if c.is_control() || c == '\\' { '_' } else { c })
        .collect();
    let cleaned = cleaned.trim_start_matches('.');

    // Leave room for `-<suffix>-<size>.webp` within the 255-byte name limit.
    let mut end = cleaned.len().min(200);
    while !cleaned.is_char_boundary(end) {
        end -= 1;
    }
    let cleaned = &cleaned[..end];
    if cleaned.is_empty() {
        "image".to_owned()
    } else {
        cleaned.to_owned()
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(value: serde_json::Value) -> ThumbnailParams {
        serde_json::from_value(value).unwrap()
    }

    const UPLOAD: &str = "uploads/0190a0b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b/DSC_001.jpg";

    #[test]
    fn fit_within_keeps_aspect_ratio() {
        assert_eq!(fit_within(4000, 3000, 1024), (1024, 768));
        assert_eq!(fit_within(3000, 4000, 256), (192, 256));
        assert_eq!(fit_within(10000, 1, 256), (256, 1));
    }

    #[test]
    fn fit_within_never_upscales() {
        assert_eq!(fit_within(100, 50, 256), (100, 50));
    }

    #[test]
    fn params_defaults_applied() {
        let params = params(json!({"images": [UPLOAD]}));
        assert_eq!(params.sizes, vec![256, 1024]);
        assert_eq!(params.formats, vec![OutputFormat::Jpeg]);
        assert_eq!(params.quality, 85);
        assert_eq!(params.max_pixels, DEFAULT_MAX_PIXELS);
        assert!(params.validate().is_ok());
    }

    #[test]
    fn params_validation_names_field() {
        let cases = [
            (json!({"images": []}), "images"),
            (json!({"images": ["photos/a.jpg"]}), "images[0]"),
            (json!({"images": ["uploads/../x.jpg"]}), "images[0]"),
            (json!({"images": [UPLOAD], "sizes": [8]}), "sizes[0]"),
            (json!({"images": [UPLOAD], "sizes": [256, 256]}), "sizes"),
            (json!({"images": [UPLOAD], "formats": []}), "formats"),
            (json!({"images": [UPLOAD], "quality": 0}), "quality"),
            (json!({"images": [UPLOAD], "max_pixels": 0}), "max_pixels"),
        ];
        for (value, field) in cases {
            let message = params(value.clone()).validate().unwrap_err();
            assert!(
                message.starts_with(&format!("parameter {field} ")),
                "{value}: {message}"
            );
        }
    }

    #[test]
    fn upload_reference_form_checked() {
        assert!(validate_upload_reference(UPLOAD).is_ok());
        assert!(
            validate_upload_reference("uploads/0190A0B4-1C2D-7E3F-8A9B-0C1D2E3F4A5B/a.jpg")
                .is_err()
        );
        assert!(
            validate_upload_reference("uploads/0190a0b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b/").is_err()
        );
        assert!(
            validate_upload_reference("uploads/0190a0b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b/a/b").is_err()
        );
        assert!(
            validate_upload_reference("uploads/0190a0b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b/..").is_err()
        );
    }

    #[test]
    fn output_stem_is_valid_name() {
        assert_eq!(output_stem("DSC_001.jpg"), "DSC_001");
        assert_eq!(output_stem(".hidden.png"), "hidden");
        assert_eq!(output_stem("..."), "image");
        let long = output_stem(&format!("{}.jpg", "é".repeat(300)));
        assert!(long.len() <= 200);
        assert!(crate::protocol::validate_output_name(&format!("{long}-4096.webp")).is_ok());
    }

    #[test]
    fn flatten_puts_transparency_on_white() {
        let mut rgba = image::RgbaImage::new(1, 1);
        rgba.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
        let rgb = flatten_on_white(&DynamicImage::ImageRgba8(rgba));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
    }
}
