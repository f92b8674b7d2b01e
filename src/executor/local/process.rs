//! Running one container's command as a child process.
//!
//! Each child leads its own process group, so that stopping it also stops
//! whatever it started, and on Linux it receives SIGKILL if the gateway dies,
//! so children never outlive the gateway. Output goes to the job's log file;
//! the last stderr lines are kept for the failure message.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::fs::File;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Largest log kept per job, in bytes; later output is dropped with a marker
/// line, so a chatty command cannot fill the disk.
pub const MAX_LOG_BYTES: u64 = 16 * 1024 * 1024;
/// Lines of stderr kept for the failure message.
pub const STDERR_TAIL_LINES: usize = 10;
/// Longest stderr line kept for the failure message, in characters.
const STDERR_LINE_CHARS: usize = 300;

/// Environment variables passed from the gateway to every child: what a
/// program needs to find tools and format text, plus the AWS variables a
/// worker needs to reach an S3 store. Nothing else of the gateway's
/// environment reaches a job.
pub const PASSTHROUGH_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
    "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE",
];

/// A container's command, resolved for this machine.
#[derive(Debug, Clone)]
pub struct ContainerCommand {
    /// Container name from the manifest.
    pub name: String,
    /// Program to run.
    pub program: PathBuf,
    /// Arguments after the program.
    pub args: Vec<String>,
    /// Environment from the manifest, in order; later entries win.
    pub env: Vec<(String, String)>,
    /// Working folder.
    pub cwd: PathBuf,
}

/// Exit of a container: its code or signal, and its last stderr lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerExit {
    /// Exit code, when the process exited by itself.
    pub code: Option<i32>,
    /// Signal that ended the process, when it was killed.
    pub signal: Option<i32>,
    /// Last lines the process wrote to stderr.
    pub stderr_tail: Vec<String>,
}

impl ContainerExit {
    /// Returns true when the process exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Describes the exit for a failure message, such as `exit code 3`.
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => match Signal::try_from(signal) {
                Ok(name) => format!("killed by signal {signal} ({name})"),
                Err(_) => format!("killed by signal {signal}"),
            },
            (None, None) => "ended without an exit code".into(),
        }
    }
}

/// Append-only job log shared by all containers and attempts of one job.
#[derive(Debug, Clone)]
pub struct LogSink {
    inner: Arc<Mutex<LogFile>>,
}

#[derive(Debug)]
struct LogFile {
    file: File,
    written: u64,
    truncated: bool,
}

impl LogSink {
    /// Opens (creating or appending) the log file at `path`.
    pub async fn open(path: PathBuf) -> std::io::Result<Self> {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await?;
        let written = file.metadata().await?.len();
        Ok(Self {
            inner: Arc::new(Mutex::new(LogFile {
                file,
                written,
                truncated: false,
            })),
        })
    }

    /// Appends bytes, dropping them once the log reached [`MAX_LOG_BYTES`].
    pub async fn write(&self, bytes: &[u8]) {
        let mut log = self.inner.lock().await;
        if log.truncated {
            return;
        }
        let result = if log.written + bytes.len() as u64 > MAX_LOG_BYTES {
            log.truncated = true;
            log.file
                .write_all(b"\n[jobgate: log limit reached; later output is dropped]\n")
                .await
        } else {
            log.written += bytes.len() as u64;
            log.file.write_all(bytes).await
        };
        // NB: tokio writes files from a background thread; without the flush
        // a reader of the log could miss bytes already written here.
        let result = match result {
            Ok(()) => log.file.flush().await,
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::warn!(%error, "writing the job log failed");
        }
    }
}

/// Keeps the last lines of a byte stream, each cut to a bounded length.
#[derive(Debug, Default)]
struct LineTail {
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

impl LineTail {
    fn push(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if byte == b'\n' {
                self.end_line();
            } else if self.partial.len() < STDERR_LINE_CHARS * 4 {
                self.partial.push(byte);
            }
        }
    }

    fn end_line(&mut self) {
        let line = String::from_utf8_lossy(&self.partial);
        let line: String = line.trim_end().chars().take(STDERR_LINE_CHARS).collect();
        self.partial.clear();
        if line.is_empty() {
            return;
        }
        if self.lines.len() == STDERR_TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    fn finish(mut self) -> Vec<String> {
        if !self.partial.is_empty() {
            self.end_line();
        }
        self.lines.into()
    }
}

/// Runs a container to its end. When `stop` is cancelled, the process group
/// gets SIGTERM, then SIGKILL after `grace`.
pub async fn run_container(
    command: &ContainerCommand,
    log: &LogSink,
    stop: &CancellationToken,
    grace: Duration,
) -> std::io::Result<ContainerExit> {
    let mut child = spawn(command)?;
    let pgid = child.id().map(|pid| Pid::from_raw(pid as i32));
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let copy_stdout = copy_output(stdout, log.clone(), None);
    let stderr_tail = Arc::new(std::sync::Mutex::new(LineTail::default()));
    let copy_stderr = copy_output(stderr, log.clone(), Some(stderr_tail.clone()));

    let wait = async {
        tokio::select! {
            status = child.wait() => status,
            () = stop.cancelled() => {
                signal_group(pgid, Signal::SIGTERM);
                match tokio::time::timeout(grace, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        signal_group(pgid, Signal::SIGKILL);
                        child.wait().await
                    }
                }
            }
        }
    };
    let (status, (), ()) = tokio::join!(
        async {
            let status = wait.await;
            // Kubernetes stops every process of a container when its main
            // process ends; do the same for leftovers in the group, which
            // would otherwise also keep the output pipes open.
            signal_group(pgid, Signal::SIGKILL);
            status
        },
        copy_stdout,
        copy_stderr
    );
    let status = status?;
    let tail = std::mem::take(
        &mut *stderr_tail
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    use std::os::unix::process::ExitStatusExt;
    Ok(ContainerExit {
        code: status.code(),
        signal: status.signal(),
        stderr_tail: tail.finish(),
    })
}

fn spawn(command: &ContainerCommand) -> std::io::Result<tokio::process::Child> {
    let mut process = tokio::process::Command::new(&command.program);
    process
        .args(&command.args)
        .env_clear()
        .envs(PASSTHROUGH_ENV.iter().filter_map(|name| {
            std::env::var_os(name).map(|value| (*name, value))
        }))
        .envs(command.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&command.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls (prctl, getppid).
        unsafe {
            process.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The gateway may have died between fork and prctl.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("gateway exited during spawn"));
                }
                Ok(())
            });
        }
    }
    process.spawn()
}

fn signal_group(pgid: Option<Pid>, signal: Signal) {
    if let Some(pgid) = pgid {
        // ESRCH only means the group is already gone.
        let _ = killpg(pgid, signal);
    }
}

async fn copy_output(
    stream: Option<impl AsyncRead + Unpin>,
    log: LogSink,
    tail: Option<Arc<std::sync::Mutex<LineTail>>>,
) {
    let Some(mut stream) = stream else { return };
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let chunk = &buffer[..n];
                log.write(chunk).await;
                if let Some(tail) = &tail {
                    tail.lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(chunk);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str, cwd: &std::path::Path) -> ContainerCommand {
        ContainerCommand {
            name: "main".into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("GREETING".into(), "hello".into())],
            cwd: cwd.to_owned(),
        }
    }

    #[tokio::test]
    async fn container_exit_code_and_stderr_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogSink::open(dir.path().join("job.log")).await.unwrap();
        let command = shell("echo \"$GREETING\"; for i in $(seq 1 15); do echo line$i >&2; done; exit 3", dir.path());
        let exit = run_container(&command, &log, &CancellationToken::new(), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(exit.code, Some(3));
        assert_eq!(exit.stderr_tail.len(), STDERR_TAIL_LINES);
        assert_eq!(exit.stderr_tail.last().map(String::as_str), Some("line15"));
        let text = std::fs::read_to_string(dir.path().join("job.log")).unwrap();
        assert!(text.contains("hello\n"), "{text}");
    }

    #[tokio::test]
    async fn container_env_is_not_inherited() {
        std::env::set_var("JOBGATE_TEST_SECRET", "s3cret");
        let dir = tempfile::tempdir().unwrap();
        let log = LogSink::open(dir.path().join("job.log")).await.unwrap();
        let command = shell("echo \"secret=[$JOBGATE_TEST_SECRET]\"", dir.path());
        run_container(&command, &log, &CancellationToken::new(), Duration::from_secs(1))
            .await
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join("job.log")).unwrap();
        assert!(text.contains("secret=[]"), "{text}");
    }

    #[tokio::test]
    async fn stop_sends_sigterm_then_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogSink::open(dir.path().join("job.log")).await.unwrap();
        let stop = CancellationToken::new();
        // The shell ignores SIGTERM, so only SIGKILL after the grace ends it.
        let command = shell("trap '' TERM; echo started; sleep 30 & wait", dir.path());
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stopper.cancel();
        });
        let started = std::time::Instant::now();
        let exit = run_container(&command, &log, &stop, Duration::from_millis(500))
            .await
            .unwrap();
        assert_eq!(exit.signal, Some(libc::SIGKILL));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn log_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogSink::open(dir.path().join("job.log")).await.unwrap();
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..20 {
            log.write(&chunk).await;
        }
        let size = std::fs::metadata(dir.path().join("job.log")).unwrap().len();
        assert!(size <= MAX_LOG_BYTES + 100, "{size}");
    }
}
