//! Runs `jobgate-worker exec` with shell commands against a file store.

mod support;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{describe, TestJob};

const UPLOAD_A: &str = "0190a0b4-0000-7000-8000-00000000000a";
const UPLOAD_B: &str = "0190a0b4-0000-7000-8000-00000000000b";

#[test]
fn exec_directives_become_progress_outputs_summary() {
    let job = TestJob::new("script", json!({}));
    let script = r#"
        echo "plain line"
        echo "progress 50 halfway there"
        printf 'report body' > report.txt
        echo "output report.txt final report.txt"
        echo 'summary {"files": 1, "kind": "demo"}'
        echo 'summary {"files": 2}'
        echo "progress not-a-number"
    "#;

    let output = job.run(&["exec", "--", "sh", "-c", script]);

    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("plain line\n"), "{stdout}");
    assert!(!stdout.contains("progress 50"), "{stdout}");
    assert!(!stdout.contains("summary"), "{stdout}");
    assert!(stdout.contains("progress not-a-number\n"), "{stdout}");

    let result = job.result().expect("result.json is written");
    assert_eq!(result.summary, json!({"files": 2, "kind": "demo"}));
    assert_eq!(result.outputs.len(), 1);
    assert_eq!(result.outputs[0].name, "final report.txt");
    assert_eq!(result.outputs[0].size, 11);
    assert_eq!(result.outputs[0].content_type, "text/plain");
    let uploaded = std::fs::read(job.output_path("final report.txt")).unwrap();
    assert_eq!(uploaded, b"report body");
    assert_eq!(job.progress().percent, 100.0);
}

#[test]
fn exec_fetch_inputs_and_outputs_folder() {
    let job = TestJob::new("compress", json!({}));
    let a = job.upload(UPLOAD_A, "notes.txt", b"aaaaaaaaaaaaaaaaaaaa");
    let b = job.upload(UPLOAD_B, "notes.txt", b"bbbb");
    job.set_parameters("compress", json!({"files": [a, b]}));
    let script = r#"
        mkdir out
        for f in inputs/*; do gzip -9 -c "$f" > "out/$(basename "$f").gz"; done
        mkdir out/ignored-subfolder
    "#;

    let output = job.run(&[
        "exec",
        "--fetch-inputs",
        "files",
        "--outputs",
        "out",
        "--",
        "sh",
        "-c",
        script,
    ]);

    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let result = job.result().expect("result.json is written");
    let names: Vec<&str> = result
        .outputs
        .iter()
        .map(|output| output.name.as_str())
        .collect();
    assert_eq!(names, vec!["notes-2.txt.gz", "notes.txt.gz"]);
    assert_eq!(result.outputs[0].content_type, "application/gzip");

    let mut text = String::new();
    let file = std::fs::File::open(job.output_path("notes.txt.gz")).unwrap();
    let mut gunzip = std::process::Command::new("gzip")
        .args(["-d", "-c"])
        .stdin(file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    gunzip
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    gunzip.wait().unwrap();
    assert_eq!(text, "aaaaaaaaaaaaaaaaaaaa");
}

#[test]
fn exec_missing_input_parameter_exits_two() {
    let job = TestJob::new("compress", json!({}));

    let output = job.run(&["exec", "--fetch-inputs", "files", "--", "true"]);

    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("files"), "{stderr}");
}

#[test]
fn exec_failing_command_keeps_exit_code() {
    let job = TestJob::new("script", json!({}));
    let script = "echo 'progress 30 started'; echo 'output missing.txt'; exit 3";

    let output = job.run(&["exec", "--", "sh", "-c", script]);

    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    assert!(job.result().is_none(), "result.json was written");
    let progress = job.progress();
    assert_eq!(progress.percent, 30.0);
    let message = progress.message.unwrap_or_default();
    assert!(message.contains("exit status 3"), "{message}");
}

#[test]
fn exec_failed_upload_fails_job() {
    let job = TestJob::new("script", json!({}));

    let output = job.run(&["exec", "--", "sh", "-c", "echo 'output does-not-exist.txt'"]);

    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(job.result().is_none(), "result.json was written");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does-not-exist.txt"), "{stderr}");
}

#[test]
fn exec_sigterm_stops_without_result() {
    let job = TestJob::new("script", json!({}));
    let mut child = job
        .command(&["exec", "--", "sleep", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Wait until the command runs: its progress message names it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running = std::fs::read(job.job_path("progress.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .is_some_and(|doc| doc["message"] == "running sleep");
        if running {
            break;
        }
        assert!(Instant::now() < deadline, "the worker never started sleep");
        std::thread::sleep(Duration::from_millis(50));
    }

    let started = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();

    assert_eq!(status.code(), Some(143));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the worker took {:?} to stop",
        started.elapsed()
    );
    assert!(job.result().is_none(), "result.json was written");
    let message = job.progress().message.unwrap_or_default();
    assert!(message.contains("stopped by SIGTERM"), "{message}");
}
