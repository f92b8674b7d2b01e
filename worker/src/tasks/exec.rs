//! The `exec` task: runs any command and turns its stdout into progress,
//! outputs and a summary.
//!
//! ```text
//! jobgate-worker exec [--fetch-inputs PARAM] [--outputs DIR] -- CMD [ARGS...]
//! ```
//!
//! The command runs in the worker's current folder, with stdin closed and
//! stderr passed through. Its stdout is read line by line, and lines of these
//! forms are consumed:
//!
//! | line | effect |
//! | --- | --- |
//! | `progress <percent> [message]` | sets the percent (a decimal number, clamped to 0..=100) and, if given, the message |
//! | `output <path> [name]` | uploads the file at `path` (relative to the current folder) as an output named `name`, or by its file name |
//! | `summary <json object>` | merges the object's keys into the summary of `result.json`; later keys win |
//!
//! The keyword is followed by one space or tab. `path` cannot contain
//! whitespace, but `name` and `message` are the rest of the line. A file is
//! uploaded when its `output` line is read, so write it completely first.
//! Every other line, and a keyword line that does not parse (logged as a
//! warning), passes through to the worker's stdout unchanged.
//!
//! `--fetch-inputs PARAM` downloads the uploads named by the request parameter
//! `PARAM` (an upload reference or an array of them) into `./inputs/<file name>`
//! before the command starts. A clashing file name gets `-2`, `-3`, ...
//! before its extension. `--outputs DIR` uploads every regular file directly in
//! `DIR` (not in subfolders) as an output after the command exits 0.
//!
//! The worker exits with the command's exit code, or 128 plus the signal
//! number when a signal killed the command. Only on exit 0 is `result.json`
//! written, last of all; otherwise the last progress message gives the exit
//! status. An output that fails to upload fails the job with exit 1; uploads
//! are first retried after transient store errors (see
//! [`crate::store::RetryPolicy`]), and a stop signal ends that wait.
//!
//! On SIGTERM or SIGINT the worker forwards the signal to the command, waits
//! for it to exit, writes a last progress message saying it was stopped, and
//! exits 143 or 130. A second signal kills the command with SIGKILL. On Linux
//! the command also gets SIGKILL if the worker dies, so it never outlives it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use super::{key_file_name, Outcome};
use crate::job::Job;
use crate::progress::error_chain;
use crate::signal::{StopSignal, StopSignals};
use crate::store::validate_key;

/// Folder, relative to the current folder, that `--fetch-inputs` downloads into.
pub const INPUTS_DIR: &str = "inputs";

/// Time to keep reading stdout after the command exited: a background process
/// that the command started may still hold the pipe open.
const STDOUT_DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Command-line arguments of `jobgate-worker exec`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// Request parameter that lists uploads (one upload reference or an array of
    /// them) to download into ./inputs/ before the command starts
    #[arg(long, value_name = "PARAM")]
    pub fetch_inputs: Option<String>,

    /// Folder whose regular files are uploaded as outputs after the command exits 0
    #[arg(long, value_name = "DIR")]
    pub outputs: Option<PathBuf>,

    /// Command to run and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// A stdout line that the worker consumes.
#[derive(Debug, Clone, PartialEq)]
enum Directive {
    Progress {
        percent: f64,
        message: Option<String>,
    },
    Output {
        path: String,
        name: Option<String>,
    },
    Summary(Map<String, Value>),
}

/// Parses a stdout line: `None` for an ordinary line, `Some(Err)` for a keyword
/// line that does not parse.
fn parse_directive(line: &str) -> Option<Result<Directive, String>> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (keyword, rest) = match line.split_once([' ', '\t']) {
        Some((keyword, rest)) => (keyword, rest.trim()),
        None => (line, ""),
    };
    let directive = match keyword {
        "progress" => parse_progress(rest),
        "output" => parse_output(rest),
        "summary" => parse_summary(rest),
        _ => return None,
    };
    Some(directive)
}

fn parse_progress(rest: &str) -> Result<Directive, String> {
    let (number, message) = match rest.split_once([' ', '\t']) {
        Some((number, message)) => (number, Some(message.trim().to_owned())),
        None => (rest, None),
    };
    let percent: f64 = number
        .parse()
        .ok()
        .filter(|percent: &f64| percent.is_finite())
        .ok_or_else(|| {
            format!("expected `progress <percent> [message]`, got percent {number:?}")
        })?;
    Ok(Directive::Progress {
        percent,
        message: message.filter(|message| !message.is_empty()),
    })
}

fn parse_output(rest: &str) -> Result<Directive, String> {
    if rest.is_empty() {
        return Err("expected `output <path> [name]`, got no path".into());
    }
    let (path, name) = match rest.split_once([' ', '\t']) {
        Some((path, name)) => (path, Some(name.trim().to_owned())),
        None => (rest, None),
    };
    Ok(Directive::Output {
        path: path.to_owned(),
        name,
    })
}

fn parse_summary(rest: &str) -> Result<Directive, String> {
    match serde_json::from_str::<Value>(rest) {
        Ok(Value::Object(object)) => Ok(Directive::Summary(object)),
        Ok(_) => Err("expected `summary <json object>`, got JSON that is not an object".into()),
        Err(error) => Err(format!(
            "expected `summary <json object>`, got invalid JSON: {error}"
        )),
    }
}

/// Runs the task and returns how it ended.
pub async fn run(job: &Job, args: &ExecArgs, signals: &mut StopSignals) -> Outcome {
    if let Some(parameter) = &args.fetch_inputs {
        let fetch = fetch_inputs(job, parameter);
        tokio::select! {
            result = fetch => {
                if let Err(outcome) = result {
                    return outcome;
                }
            }
            signal = signals.recv() => return Outcome::Stopped(signal),
        }
    }

    let mut runner = Runner {
        job,
        summary: Map::new(),
        upload_errors: Vec::new(),
    };
    let status = match runner.run_command(&args.command, signals).await {
        Ok(status) => status,
        Err(outcome) => return outcome,
    };

    if !status.success() {
        return failed_command_outcome(&args.command[0], status);
    }

    // Uploads and the result are retried while the store is unreachable, so a
    // stop signal must be able to end the wait. A multipart upload cut short
    // here is not aborted; its parts stay until the bucket's lifecycle rules
    // remove them.
    if let Some(dir) = &args.outputs {
        let uploaded = tokio::select! {
            uploaded = runner.upload_folder(dir) => uploaded,
            signal = signals.recv() => return Outcome::Stopped(signal),
        };
        if let Err(message) = uploaded {
            return Outcome::failed(message);
        }
    }
    if !runner.upload_errors.is_empty() {
        return Outcome::failed(format!(
            "the command succeeded, but {} output(s) failed to upload: {}",
            runner.upload_errors.len(),
            runner.upload_errors.join("; ")
        ));
    }

    let finished = tokio::select! {
        finished = job.finish(Value::Object(runner.summary)) => finished,
        signal = signals.recv() => return Outcome::Stopped(signal),
    };
    match finished {
        Ok(_) => Outcome::Succeeded,
        Err(error) => Outcome::failed(format!(
            "failed to write the result: {}",
            error_chain(&error)
        )),
    }
}

/// Downloads the uploads named by a request parameter into `./inputs/`.
async fn fetch_inputs(job: &Job, parameter: &str) -> Result<(), Outcome> {
    let keys = upload_keys(&job.request().parameters, parameter).map_err(Outcome::invalid)?;

    tokio::fs::create_dir_all(INPUTS_DIR)
        .await
        .map_err(|error| {
            Outcome::failed(format!("failed to create the folder {INPUTS_DIR}: {error}"))
        })?;

    job.progress().set_stage(Some("fetch"));
    let total = keys.len() as u64;
    let mut used = HashSet::new();
    for (index, key) in keys.iter().enumerate() {
        let file_name = unique_file_name(key_file_name(key), &mut used);
        let path = Path::new(INPUTS_DIR).join(&file_name);
        job.fetch_input(key, &path).await.map_err(|error| {
            Outcome::failed(format!(
                "failed to fetch input {key:?}: {}",
                error_chain(&error)
            ))
        })?;
        let done = index as u64 + 1;
        job.progress().update(|state| {
            state.message = Some(format!("fetched input {done} of {total}: {file_name}"));
        });
    }
    Ok(())
}

/// Reads a parameter that is one store key or an array of them.
fn upload_keys(parameters: &Value, parameter: &str) -> Result<Vec<String>, String> {
    let value = parameters
        .get(parameter)
        .ok_or_else(|| format!("invalid parameter {parameter}: missing from the request"))?;
    let keys: Vec<String> = match value {
        Value::String(key) => vec![key.clone()],
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    format!("invalid parameter {parameter}[{index}]: expected a string")
                })
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(format!(
                "invalid parameter {parameter}: expected a string or an array of strings"
            ))
        }
    };
    for key in &keys {
        validate_key(key).map_err(|error| format!("invalid parameter {parameter}: {error}"))?;
    }
    Ok(keys)
}

/// Returns the file name, or `stem-2.ext`, `stem-3.ext`, ... when already used.
fn unique_file_name(file_name: &str, used: &mut HashSet<String>) -> String {
    let (stem, extension) = match file_name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => (stem, Some(extension)),
        _ => (file_name, None),
    };
    let mut candidate = file_name.to_owned();
    let mut suffix = 2;
    while used.contains(&candidate) {
        candidate = match extension {
            Some(extension) => format!("{stem}-{suffix}.{extension}"),
            None => format!("{stem}-{suffix}"),
        };
        suffix += 1;
    }
    used.insert(candidate.clone());
    candidate
}

fn failed_command_outcome(program: &str, status: ExitStatus) -> Outcome {
    use std::os::unix::process::ExitStatusExt;

    if let Some(code) = status.code() {
        return Outcome::Failed {
            exit_code: code as u8,
            message: format!("command {program} failed with exit status {code}"),
        };
    }
    let signal = status.signal().unwrap_or(0);
    Outcome::Failed {
        exit_code: 128u8.wrapping_add(signal as u8),
        message: format!("command {program} was killed by signal {signal}"),
    }
}

/// End of the read loop over the command's stdout.
enum LoopEnd {
    Exited(ExitStatus),
    Signalled(StopSignal),
}

/// The state of one command run.
struct Runner<'a> {
    job: &'a Job,
    summary: Map<String, Value>,
    upload_errors: Vec<String>,
}

impl Runner<'_> {
    /// Runs the command to its end and returns its exit status, or the outcome
    /// of a stop signal or a failed start.
    async fn run_command(
        &mut self,
        command: &[String],
        signals: &mut StopSignals,
    ) -> Result<ExitStatus, Outcome> {
        let program = &command[0];
        let mut child = spawn(command).map_err(|error| {
            Outcome::failed(format!("failed to start command {program}: {error}"))
        })?;
        tracing::info!(job.id = %self.job.id(), command = ?command, pid = child.id(), "command started");
        self.job.progress().set_stage(Some("run"));
        self.job
            .progress()
            .update(|state| state.message = Some(format!("running {program}")));

        // The child was created with a piped stdout just above.
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut reader = BufReader::new(stdout);

        match self.read_until_exit(&mut child, &mut reader, signals).await {
            LoopEnd::Exited(status) => {
                tracing::info!(job.id = %self.job.id(), %status, "command exited");
                Ok(status)
            }
            LoopEnd::Signalled(signal) => {
                stop_child(&mut child, reader, signal, signals).await;
                Err(Outcome::Stopped(signal))
            }
        }
    }

    async fn read_until_exit(
        &mut self,
        child: &mut Child,
        reader: &mut BufReader<ChildStdout>,
        signals: &mut StopSignals,
    ) -> LoopEnd {
        let mut line = Vec::new();
        let mut stdout_open = true;
        let mut status = None;
        let drain_deadline = tokio::time::sleep(Duration::MAX);
        tokio::pin!(drain_deadline);

        loop {
            if let (Some(status), false) = (status, stdout_open) {
                return LoopEnd::Exited(status);
            }
            tokio::select! {
                // `read_until` keeps partial data in `line` when another branch wins,
                // so the line is completed on the next turn.
                read = reader.read_until(b'\n', &mut line), if stdout_open => {
                    match read {
                        Ok(0) => stdout_open = false,
                        Ok(_) => {
                            // An `output` line can wait minutes for store retries, and
                            // a stop signal must still end the job meanwhile.
                            tokio::select! {
                                () = self.handle_line(&line) => {}
                                signal = signals.recv() => return LoopEnd::Signalled(signal),
                            }
                            line.clear();
                        }
                        Err(error) => {
                            tracing::warn!(job.id = %self.job.id(), %error, "failed to read the command's stdout");
                            stdout_open = false;
                        }
                    }
                }
                exited = child.wait(), if status.is_none() => {
                    match exited {
                        Ok(exit_status) => status = Some(exit_status),
                        Err(error) => {
                            tracing::error!(job.id = %self.job.id(), %error, "failed to wait for the command");
                            // An unknown status must not read as success.
                            status = Some(std::os::unix::process::ExitStatusExt::from_raw(1 << 8));
                        }
                    }
                    drain_deadline.as_mut().reset(tokio::time::Instant::now() + STDOUT_DRAIN_GRACE);
                }
                _ = &mut drain_deadline, if status.is_some() && stdout_open => {
                    tracing::warn!(
                        job.id = %self.job.id(),
                        grace_seconds = STDOUT_DRAIN_GRACE.as_secs(),
                        "the command exited but its stdout stayed open; a background process may hold it"
                    );
                    stdout_open = false;
                }
                signal = signals.recv() => return LoopEnd::Signalled(signal),
            }
        }
    }

    async fn handle_line(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        match parse_directive(&text) {
            None => pass_through(line).await,
            Some(Err(reason)) => {
                tracing::warn!(job.id = %self.job.id(), %reason, "malformed directive passed through");
                pass_through(line).await;
            }
            Some(Ok(Directive::Progress { percent, message })) => {
                self.job.progress().update(|state| {
                    state.percent = percent;
                    if message.is_some() {
                        state.message = message;
                    }
                });
            }
            Some(Ok(Directive::Output { path, name })) => self.upload_output(&path, name).await,
            Some(Ok(Directive::Summary(object))) => self.summary.extend(object),
        }
    }

    async fn upload_output(&mut self, path: &str, name: Option<String>) {
        let name = name.unwrap_or_else(|| key_file_name(path).to_owned());
        match self.job.write_output_file(&name, Path::new(path)).await {
            Ok(output) => {
                tracing::info!(job.id = %self.job.id(), output = %output.name, size = output.size, "output uploaded")
            }
            Err(error) => {
                let message = format!("{path} as {name:?}: {}", error_chain(&error));
                tracing::error!(job.id = %self.job.id(), error = %message, "failed to upload output");
                self.upload_errors.push(message);
            }
        }
    }

    /// Uploads every regular file directly in `dir`, in name order.
    async fn upload_folder(&mut self, dir: &Path) -> Result<(), String> {
        let mut entries = tokio::fs::read_dir(dir).await.map_err(|error| {
            format!(
                "failed to read the outputs folder {}: {error}; the command must create it",
                dir.display()
            )
        })?;
        let mut files = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|error| format!("failed to list {}: {error}", dir.display()))?
        {
            let file_type = entry.file_type().await.map_err(|error| {
                format!("failed to inspect {}: {error}", entry.path().display())
            })?;
            if file_type.is_file() {
                files.push(entry.path());
            } else {
                tracing::debug!(path = %entry.path().display(), "skipped: not a regular file");
            }
        }
        files.sort();

        for path in files {
            let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
                self.upload_errors
                    .push(format!("{}: the file name is not UTF-8", path.display()));
                continue;
            };
            let name = name.to_owned();
            self.upload_output(&path.to_string_lossy(), Some(name))
                .await;
        }
        Ok(())
    }
}

async fn pass_through(line: &[u8]) {
    let mut stdout = tokio::io::stdout();
    // A closed stdout of the worker must not stop the job; the line is lost.
    let _ = stdout.write_all(line).await;
    let _ = stdout.flush().await;
}

/// Forwards a stop signal to the command and waits for it to exit.
///
/// Stdout keeps being copied through meanwhile, so a command that prints
/// while shutting down cannot block on a full pipe. A second signal kills it.
async fn stop_child(
    child: &mut Child,
    mut reader: BufReader<ChildStdout>,
    signal: StopSignal,
    signals: &mut StopSignals,
) {
    let pid = child.id();
    tracing::info!(
        ?pid,
        signal = signal.name(),
        "forwarding stop signal to the command"
    );
    if let Some(pid) = pid {
        // SAFETY: kill(2) has no memory effects; the pid is our own unreaped child.
        unsafe { libc::kill(pid as libc::pid_t, signal.number()) };
    }
    let drain = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut reader, &mut tokio::io::stdout()).await;
    });

    tokio::select! {
        status = child.wait() => {
            tracing::info!(?status, "command exited after the stop signal");
        }
        second = signals.recv() => {
            tracing::warn!(signal = second.name(), "second stop signal; killing the command");
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
    drain.abort();
}

fn spawn(command: &[String]) -> std::io::Result<Child> {
    let mut process = Command::new(&command[0]);
    process
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    set_parent_death_signal(&mut process);
    process.spawn()
}

/// Makes Linux send SIGKILL to the child when the worker dies.
///
/// NB: the kernel sends the signal when the *thread* that forked exits, not the
/// process. This runs on a tokio runtime thread, which lives as long as the
/// runtime; spawning from `spawn_blocking` would break it, because idle
/// blocking threads exit.
#[cfg(target_os = "linux")]
fn set_parent_death_signal(process: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and calls only the
    // async-signal-safe functions prctl, getppid and raise.
    unsafe {
        process.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The worker may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal(_process: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn directive_progress_with_message() {
        let parsed = parse_directive("progress 42.5 compressing a.txt\n");
        assert_eq!(
            parsed,
            Some(Ok(Directive::Progress {
                percent: 42.5,
                message: Some("compressing a.txt".into())
            }))
        );
    }

    #[test]
    fn directive_progress_without_message() {
        let parsed = parse_directive("progress 7");
        assert_eq!(
            parsed,
            Some(Ok(Directive::Progress {
                percent: 7.0,
                message: None
            }))
        );
    }

    #[test]
    fn directive_malformed_is_error() {
        for line in [
            "progress",
            "progress abc",
            "progress NaN",
            "output",
            "summary [1]",
            "summary {",
        ] {
            assert!(
                matches!(parse_directive(line), Some(Err(_))),
                "{line:?} parsed"
            );
        }
    }

    #[test]
    fn directive_ordinary_lines_ignored() {
        for line in ["hello", "progressive rock", "outputs: 3", ""] {
            assert_eq!(parse_directive(line), None, "{line:?}");
        }
    }

    #[test]
    fn directive_output_with_name() {
        assert_eq!(
            parse_directive("output out/a.gz report archive.gz"),
            Some(Ok(Directive::Output {
                path: "out/a.gz".into(),
                name: Some("report archive.gz".into())
            }))
        );
    }

    #[test]
    fn directive_summary_object() {
        let Some(Ok(Directive::Summary(object))) = parse_directive(r#"summary {"files": 3}"#)
        else {
            panic!("summary did not parse");
        };
        assert_eq!(object["files"], 3);
    }

    #[test]
    fn upload_keys_accepts_string_or_array() {
        let parameters =
            json!({"one": "uploads/a/x.txt", "many": ["uploads/a/x.txt", "uploads/b/y.txt"]});
        assert_eq!(upload_keys(&parameters, "one").unwrap().len(), 1);
        assert_eq!(upload_keys(&parameters, "many").unwrap().len(), 2);
    }

    #[test]
    fn upload_keys_errors_name_parameter() {
        let parameters = json!({"bad": [1], "escape": "../x", "number": 3});
        for name in ["bad", "escape", "number", "missing"] {
            let message = upload_keys(&parameters, name).unwrap_err();
            assert!(message.contains(name), "{message}");
        }
    }

    #[test]
    fn unique_file_name_keeps_extension() {
        let mut used = HashSet::new();
        assert_eq!(unique_file_name("a.txt", &mut used), "a.txt");
        assert_eq!(unique_file_name("a.txt", &mut used), "a-2.txt");
        assert_eq!(unique_file_name("README", &mut used), "README");
        assert_eq!(unique_file_name("README", &mut used), "README-2");
    }
}
