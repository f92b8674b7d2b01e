//! Runs `jobgate-worker thumbnail` on generated images against a file store.

mod support;

use std::io::Cursor;

use image::{ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use serde_json::json;
use support::{describe, image_size, TestJob};

const UPLOAD_A: &str = "0190a0b4-0000-7000-8000-00000000000a";
const UPLOAD_B: &str = "0190a0b4-0000-7000-8000-00000000000b";
const UPLOAD_C: &str = "0190a0b4-0000-7000-8000-00000000000c";
const UPLOAD_D: &str = "0190a0b4-0000-7000-8000-00000000000d";
const UPLOAD_E: &str = "0190a0b4-0000-7000-8000-00000000000e";

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let image = RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Jpeg).unwrap();
    bytes.into_inner()
}

fn png_with_alpha(width: u32, height: u32) -> Vec<u8> {
    let image = RgbaImage::from_fn(width, height, |x, _| Rgba([200, 10, 10, (x % 256) as u8]));
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Png).unwrap();
    bytes.into_inner()
}

/// CRC-32 (IEEE) as PNG chunks use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    chunk.extend_from_slice(&body);
    chunk.extend_from_slice(&crc32(&body).to_be_bytes());
    chunk
}

/// Builds a decompression bomb: a tiny PNG whose header claims 60000x60000 RGB pixels.
fn png_bomb() -> Vec<u8> {
    let mut header = Vec::new();
    header.extend_from_slice(&60_000u32.to_be_bytes());
    header.extend_from_slice(&60_000u32.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);

    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend(png_chunk(b"IHDR", &header));
    bytes.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    bytes.extend(png_chunk(b"IEND", &[]));
    bytes
}

#[test]
fn thumbnail_mixed_inputs_per_item_outcomes() {
    let job = TestJob::new("thumbnail", json!({}));
    let landscape = job.upload(UPLOAD_A, "landscape.jpg", &jpeg(400, 300));
    let portrait = job.upload(UPLOAD_B, "portrait.png", &png_with_alpha(90, 120));
    let corrupt = job.upload(
        UPLOAD_C,
        "corrupt.jpg",
        b"\xff\xd8\xff\xe0 this is not a JPEG",
    );
    let bomb = job.upload(UPLOAD_D, "bomb.png", &png_bomb());
    let missing = format!("uploads/{UPLOAD_E}/missing.jpg");
    job.set_parameters(
        "thumbnail",
        json!({
            "images": [landscape, portrait, corrupt, bomb, missing],
            "sizes": [64, 256],
            "formats": ["jpeg", "png", "webp"],
            "quality": 80,
        }),
    );

    let output = job.run(&["thumbnail"]);

    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let result = job.result().expect("result.json is written");
    let summary = &result.summary;
    assert_eq!(summary["images"], 5, "{summary}");
    assert_eq!(summary["succeeded"], 2, "{summary}");

    let failed = summary["failed"].as_array().expect("failed is an array");
    assert_eq!(failed.len(), 3, "{summary}");
    let error_of = |input: &str| {
        failed
            .iter()
            .find(|item| item["input"] == input)
            .and_then(|item| item["error"].as_str())
            .unwrap_or_else(|| panic!("no failure listed for {input}: {summary}"))
            .to_owned()
    };
    assert!(
        error_of(&bomb).contains("max_pixels"),
        "{}",
        error_of(&bomb)
    );
    assert!(
        error_of(&bomb).contains("60000x60000"),
        "{}",
        error_of(&bomb)
    );
    assert!(
        error_of(&missing).contains("not found"),
        "{}",
        error_of(&missing)
    );
    assert!(!error_of(&corrupt).is_empty());

    let expected_sizes = [
        ("landscape-64", (64, 48)),
        ("landscape-256", (256, 192)),
        ("portrait-64", (48, 64)),
        // Smaller than the requested size, so kept at its own size.
        ("portrait-256", (90, 120)),
    ];
    for (stem, dimensions) in expected_sizes {
        for extension in ["jpg", "png", "webp"] {
            let name = format!("{stem}.{extension}");
            let path = job.output_path(&name);
            assert!(path.exists(), "{name} was not written");
            assert_eq!(image_size(&path), dimensions, "{name}");
        }
    }
    assert_eq!(result.outputs.len(), 12);
    let webp = result
        .outputs
        .iter()
        .find(|output| output.name == "landscape-64.webp")
        .unwrap();
    assert_eq!(webp.content_type, "image/webp");
    let jpeg_output = result
        .outputs
        .iter()
        .find(|output| output.name == "landscape-64.jpg")
        .unwrap();
    assert_eq!(jpeg_output.content_type, "image/jpeg");
    assert_eq!(
        jpeg_output.size,
        std::fs::metadata(job.output_path("landscape-64.jpg"))
            .unwrap()
            .len()
    );

    let progress = job.progress();
    assert_eq!(progress.percent, 100.0);
    assert_eq!(progress.done, Some(5));
    assert_eq!(progress.total, Some(5));
}

#[test]
fn thumbnail_duplicate_stems_get_suffix() {
    let job = TestJob::new("thumbnail", json!({}));
    let a = job.upload(UPLOAD_A, "photo.jpg", &jpeg(100, 100));
    let b = job.upload(UPLOAD_B, "photo.jpg", &jpeg(50, 100));
    job.set_parameters("thumbnail", json!({"images": [a, b], "sizes": [32]}));

    let output = job.run(&["thumbnail"]);

    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(image_size(&job.output_path("photo-32.jpg")), (32, 32));
    assert_eq!(image_size(&job.output_path("photo-2-32.jpg")), (16, 32));
}

#[test]
fn thumbnail_all_failed_exits_one() {
    let job = TestJob::new("thumbnail", json!({}));
    let corrupt = job.upload(UPLOAD_A, "corrupt.png", b"not an image at all");
    job.set_parameters("thumbnail", json!({"images": [corrupt]}));

    let output = job.run(&["thumbnail"]);

    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(job.result().is_none(), "result.json was written");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("all 1 images failed"), "{stderr}");
    assert!(stderr.contains("corrupt.png"), "{stderr}");
    let message = job.progress().message.unwrap_or_default();
    assert!(message.contains("all 1 images failed"), "{message}");
}

#[test]
fn thumbnail_invalid_size_exits_two() {
    let upload = format!("uploads/{UPLOAD_A}/a.jpg");
    let job = TestJob::new("thumbnail", json!({"images": [upload], "sizes": [8]}));

    let output = job.run(&["thumbnail"]);

    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sizes[0]"), "{stderr}");
    assert!(job.result().is_none(), "result.json was written");
}

#[test]
fn thumbnail_unknown_format_exits_two() {
    let upload = format!("uploads/{UPLOAD_A}/a.jpg");
    let job = TestJob::new(
        "thumbnail",
        json!({"images": [upload], "formats": ["avif"]}),
    );

    let output = job.run(&["thumbnail"]);

    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("formats"), "{stderr}");
}

#[test]
fn worker_without_env_exits_two() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_jobgate-worker"))
        .arg("thumbnail")
        .env_remove("JOBGATE_JOB_ID")
        .env_remove("JOBGATE_STORE")
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JOBGATE_JOB_ID"), "{stderr}");
}

#[test]
fn worker_help_lists_tasks() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_jobgate-worker"))
        .arg("--help")
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("thumbnail"), "{help}");
    assert!(help.contains("exec"), "{help}");
    assert!(help.contains("JOBGATE_STORE"), "{help}");
}
