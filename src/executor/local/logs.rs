//! Reading a job's log file: the last lines, and following it as it grows.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;

use crate::executor::LogStream;

/// How often a followed log is checked for new bytes.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// Returns the last `tail` lines of `text`, or all of it.
pub fn last_lines(text: &[u8], tail: Option<usize>) -> &[u8] {
    let Some(tail) = tail else { return text };
    if tail == 0 {
        return &text[text.len()..];
    }
    // A final newline ends the last line; it does not start another.
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut newlines = 0;
    for (index, byte) in body.iter().enumerate().rev() {
        if *byte == b'\n' {
            newlines += 1;
            if newlines == tail {
                return &text[index + 1..];
            }
        }
    }
    text
}

/// Streams a log file: its last lines, then, if `finished` is given, new
/// bytes until that token is cancelled and the file has no more.
pub async fn stream(
    path: PathBuf,
    tail: Option<usize>,
    finished: Option<CancellationToken>,
) -> std::io::Result<LogStream> {
    let text = match tokio::fs::read(&path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let first = Bytes::copy_from_slice(last_lines(&text, tail));
    let offset = text.len() as u64;
    let head = futures::stream::once(async move { Ok(first) });
    let Some(finished) = finished else {
        return Ok(Box::pin(head));
    };
    let rest = futures::stream::unfold(
        (path, offset, finished, false),
        |(path, offset, finished, last_round)| async move {
            if last_round {
                return None;
            }
            loop {
                let done = finished.is_cancelled();
                match read_from(&path, offset).await {
                    Ok(bytes) if !bytes.is_empty() => {
                        let next = offset + bytes.len() as u64;
                        return Some((Ok(Bytes::from(bytes)), (path, next, finished, false)));
                    }
                    Ok(_) if done => return None,
                    Ok(_) => {}
                    Err(e) => return Some((Err(e), (path, offset, finished, true))),
                }
                tokio::select! {
                    () = finished.cancelled() => {}
                    () = tokio::time::sleep(FOLLOW_POLL) => {}
                }
            }
        },
    );
    Ok(Box::pin(futures::StreamExt::chain(head, rest)))
}

async fn read_from(path: &PathBuf, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut bytes = Vec::new();
    file.take(1024 * 1024).read_to_end(&mut bytes).await?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_counts_from_the_end() {
        let text = b"a\nb\nc\n";
        assert_eq!(last_lines(text, Some(2)), b"b\nc\n");
        assert_eq!(last_lines(text, Some(3)), b"a\nb\nc\n");
        assert_eq!(last_lines(text, Some(10)), b"a\nb\nc\n");
        assert_eq!(last_lines(text, Some(0)), b"");
        assert_eq!(last_lines(text, None), b"a\nb\nc\n");
        assert_eq!(last_lines(b"a\nb", Some(1)), b"b");
    }
}
