//! The ledger's state as one snapshot stream, for a node that joins the network without
//! replaying every block. The stream checks itself; the joining node checks its roots
//! against certified ones, so it trusts this node for nothing but availability.

use super::budget::{SNAPSHOTS_PER_SOURCE_PER_MINUTE, SourceBudget};
use super::{ApiResult, Node};
use crate::backend::NodeError;
use crate::problem::{Problem, ProblemBody};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::io::Write;

/// The header naming the height a snapshot holds.
pub const SNAPSHOT_HEIGHT_HEADER: &str = "x-secnet-snapshot-height";

/// Snapshots streamed at once: each holds a read of the database open and a core busy, so
/// one at a time; others are answered 503 (retry).
static SNAPSHOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Seconds a caller refused while another snapshot streams is told to wait.
const BUSY_RETRY_S: u64 = 5;

/// Bytes handed to the connection at a time.
const CHUNK: usize = 256 * 1024;

#[utoipa::path(
    get,
    path = "/v1/snapshot",
    tag = "ledger",
    summary = "The ledger as last written to disk, as one snapshot stream",
    description = "Binary (format secnet-snapshot/1): the tip, its block, every state entry and every access-log leaf. A joining node checks the stream against itself and its roots against a certified header, so this node is trusted for nothing but availability. One snapshot is streamed at a time, and one source may start one a minute; a reader that keeps the stream waiting longer than 30 s plus a second per MiB it has taken is dropped.",
    responses(
        (status = 200, description = "the snapshot; its height in x-secnet-snapshot-height", content_type = "application/octet-stream"),
        (status = 429, description = "this source started a snapshot less than a minute ago; retry after Retry-After seconds", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "a snapshot is already being streamed; retry after Retry-After seconds", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn snapshot(
    State(node): Node,
    axum::Extension(budget): axum::Extension<SourceBudget>,
    secnet_web::Source(source): secnet_web::Source,
) -> ApiResult<Response> {
    // Busy first: a caller turned away for another's stream keeps its budget.
    let Ok(permit) = SNAPSHOTS.try_acquire() else {
        return Ok(Problem::busy(
            StatusCode::SERVICE_UNAVAILABLE,
            BUSY_RETRY_S,
            format!("a snapshot is already being streamed; retry in {BUSY_RETRY_S} s"),
        ));
    };
    if let Some(retry_s) = budget.charge(source, 1) {
        return Ok(Problem::busy(
            StatusCode::TOO_MANY_REQUESTS,
            retry_s,
            format!(
                "this address may start {SNAPSHOTS_PER_SOURCE_PER_MINUTE} snapshot a minute; retry in {retry_s} s"
            ),
        ));
    }
    let source = node
        .with_ledger(secnet_ledger::Ledger::snapshot_source)?
        .map_err(NodeError::from)?;
    let height = source.height().map_err(NodeError::from)?;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::with_capacity(
            CHUNK,
            ChannelWriter {
                sender: sender.clone(),
                runtime,
                deadline: std::time::Instant::now() + STREAM_DEADLINE,
                sent: 0,
                waited: std::time::Duration::ZERO,
            },
        );
        let written = source
            .write_to(&mut out)
            .map_err(|e| e.to_string())
            .and_then(|()| out.flush().map_err(|e| e.to_string()));
        // Nothing more waits for the reader (it may be why the stream failed): what is still
        // buffered is dropped unsent, and the database read and the permit go now.
        drop(out.into_parts());
        drop(source);
        drop(permit);
        if let Err(e) = written {
            tracing::warn!(height, error = %e, "snapshot stream ended early");
            // The reader learns of it if it has room; a full channel means it stopped reading.
            let _ = sender.try_send(Err(std::io::Error::other(e)));
        }
    });
    let stream = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::HeaderName::from_static(SNAPSHOT_HEIGHT_HEADER),
                height.to_string(),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A reader that takes no chunk for this long is dropped: a slow reader would otherwise
/// hold the only snapshot permit and a database read open (which keeps the ledger file from
/// reusing freed pages).
const STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);
/// No snapshot stream lasts longer than this.
const STREAM_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// A reader is dropped once the stream has waited for it longer than [`STALL_LIMIT`] plus a
/// second for every this many bytes it took: one that reads a chunk just often enough not to
/// stall would otherwise hold the only permit for the whole [`STREAM_DEADLINE`]. Only time
/// spent waiting for the reader counts, not the time the node takes to produce the stream.
const MIN_BYTES_PER_S: u64 = 1024 * 1024;

/// How much longer a reader that has taken `sent` bytes, and kept the stream waiting for
/// `waited` in all, may keep it waiting (see [`MIN_BYTES_PER_S`]).
fn reader_allowance(sent: u64, waited: std::time::Duration) -> std::time::Duration {
    let earned = std::time::Duration::from_secs_f64(sent as f64 / MIN_BYTES_PER_S as f64);
    (STALL_LIMIT + earned).saturating_sub(waited)
}

/// Hands written bytes to the response body; fails once the client went away, stalls, keeps
/// the stream waiting beyond [`reader_allowance`], or the stream's deadline passes.
struct ChannelWriter {
    sender: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    runtime: tokio::runtime::Handle,
    deadline: std::time::Instant,
    sent: u64,
    /// How long the stream has waited for the reader to take what was sent.
    waited: std::time::Duration,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let gone = |why: &str| std::io::Error::new(std::io::ErrorKind::BrokenPipe, why.to_owned());
        let now = std::time::Instant::now();
        let left = self
            .deadline
            .checked_duration_since(now)
            .ok_or_else(|| gone("the stream's deadline passed"))?;
        let allowed = reader_allowance(self.sent, self.waited);
        if allowed.is_zero() {
            return Err(gone("the client read too slowly"));
        }
        let chunk = Ok(Bytes::copy_from_slice(buf));
        let sent = self.runtime.block_on(
            self.sender
                .send_timeout(chunk, STALL_LIMIT.min(left).min(allowed)),
        );
        self.waited += now.elapsed();
        sent.map_err(|e| match e {
            tokio::sync::mpsc::error::SendTimeoutError::Timeout(_) => {
                gone("the client stopped reading, or read too slowly")
            }
            tokio::sync::mpsc::error::SendTimeoutError::Closed(_) => gone("client went away"),
        })?;
        self.sent += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_reader_earns_waiting_time_by_what_it_took() {
        assert_eq!(reader_allowance(0, Duration::ZERO), STALL_LIMIT);
        assert_eq!(
            reader_allowance(60 * MIN_BYTES_PER_S, Duration::from_secs(10)),
            STALL_LIMIT + Duration::from_secs(50)
        );
        assert_eq!(reader_allowance(0, STALL_LIMIT * 2), Duration::ZERO);
        assert!(reader_allowance(u64::MAX, Duration::ZERO) > STREAM_DEADLINE);
    }
}
