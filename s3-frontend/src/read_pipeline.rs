//! The read pipeline: streams a byte range of an object from its blocks. A task fetches
//! up to `FETCH_AHEAD` blocks at once, in order, into a channel of `READ_AHEAD`, so the
//! disk and the network work ahead of the client while memory per request stays bounded:
//! at most `FETCH_AHEAD + READ_AHEAD + 1` blocks here (7 MiB with 1 MiB blocks, the block
//! being sent included), and each block in flight also on its data node's side and in the
//! HTTP/2 buffers between them. A client that goes away stops the fetching. The first
//! block is in hand before the response starts: a GET whose data cannot be read gets an S3
//! error, never a 200 with a body that stops short. A failure after that can only cut the body, which the client
//! sees as a connection that ended before Content-Length.

use std::ops::Range;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use hangar_model::Store;
use hangar_proto::model::{BlockEntry, Object, PartData};
use s3s::dto::StreamingBlob;
use s3s::{S3Error, s3_error};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use crate::errors::internal;
use crate::sse_c::CustomerKey;

/// Blocks fetched at once, in order.
const FETCH_AHEAD: usize = 4;
/// Fetched blocks waiting for the client.
const READ_AHEAD: usize = 2;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReadError(String);

/// The bytes `range` of `obj` as a stream, once its first bytes are in hand; decrypted with
/// `key` when the object is encrypted (the caller checked the key with `sse_c::check`).
pub async fn object_body(
    store: &Store,
    obj: &Object,
    range: Range<u64>,
    key: Option<&CustomerKey>,
) -> Result<StreamingBlob, S3Error> {
    let key = key.filter(|_| !obj.sse_customer_key_md5.is_empty()).cloned();
    if let Some(data) = &obj.inline_data {
        let data = match &key {
            Some(k) => k.open(data)?,
            None => data.clone(),
        };
        let (s, e) = (range.start as usize, (range.end as usize).min(data.len()));
        let chunk = data.slice(s.min(e)..e);
        return Ok(StreamingBlob::wrap(futures::stream::iter([Ok::<_, ReadError>(chunk)])));
    }
    if range.is_empty() {
        return Ok(StreamingBlob::wrap(futures::stream::empty::<Result<Bytes, ReadError>>()));
    }
    let (tx, mut rx) = mpsc::channel(READ_AHEAD);
    let (store2, parts) = (store.clone(), obj.parts.clone());
    // A child of the request's span: the body streams on after the response head.
    let span = tracing::debug_span!("read data", bytes = range.end - range.start);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            if let Err(e) = send_range(&store2, &parts, range, &tx, key.as_ref()).await {
                tracing::warn!(error = ?e, "object read failed");
                let _ = tx.send(Err(e)).await;
            }
        },
        span,
    ));
    let first = match rx.recv().await {
        Some(Ok(b)) => b,
        Some(Err(e)) => return Err(e),
        None => return Err(s3_error!(InternalError, "the object's data could not be read")),
    };
    let rest = ReceiverStream::new(rx).map(to_read as fn(_) -> _);
    Ok(StreamingBlob::wrap(futures::stream::iter([Ok(first)]).chain(rest)))
}

fn to_read(r: Result<Bytes, S3Error>) -> Result<Bytes, ReadError> {
    r.map_err(|e| ReadError(e.message().unwrap_or("object read failed").to_string()))
}

/// One block of a data version, checked for its size and decrypted with `key`.
async fn fetch_block(
    store: &Store,
    block: &BlockEntry,
    data_version: &[u8],
    key: Option<&CustomerKey>,
) -> Result<Bytes, S3Error> {
    let data = store.blocks.get(&block.hash, data_version).await.map_err(|e| {
        tracing::warn!(block = %hex::encode(&block.hash), error = %e, "cannot read a block");
        internal(e)
    })?;
    let overhead = if key.is_some() { crate::sse_c::OVERHEAD } else { 0 };
    if data.len() != block.size as usize + overhead {
        return Err(s3_error!(InternalError, "a block has an unexpected size"));
    }
    match key {
        Some(k) => k.open(&data),
        None => Ok(data),
    }
}

/// The blocks of `part` at offsets from `from` on, with their offsets, and whether more
/// follow: from the copy of its block list in its entry when it has one (nothing to read),
/// else a page of the list.
async fn block_page(store: &Store, part: &PartData, from: u64) -> Result<(Vec<(u64, BlockEntry)>, bool), S3Error> {
    if !part.blocks.is_empty() {
        let offsets = part.blocks.iter().scan(0u64, |next, b| {
            let at = *next;
            *next += b.size as u64;
            Some(at)
        });
        let page = offsets.zip(part.blocks.iter().cloned()).filter(|(off, _)| *off >= from).collect();
        return Ok((page, false));
    }
    let (page, more) = store.block_page(&part.data_version, from, 256).await.map_err(internal)?;
    Ok((page.into_iter().map(|(off, f)| (off, f.value)).collect(), more))
}

async fn send_range(
    store: &Store,
    parts: &[PartData],
    range: Range<u64>,
    tx: &mpsc::Sender<Result<Bytes, S3Error>>,
    key: Option<&CustomerKey>,
) -> Result<(), S3Error> {
    let mut part_start = 0u64;
    for part in parts {
        let part_end = part_start + part.size;
        if part_end <= range.start || part_start >= range.end {
            part_start = part_end;
            continue;
        }
        // Offsets within this part.
        let (want_s, want_e) = (range.start.saturating_sub(part_start), range.end.min(part_end) - part_start);
        // Blocks are cut at multiples of the block size; start at the block holding the
        // first wanted byte (and from the beginning if the data was cut otherwise).
        let aligned = want_s - want_s % store.block_size as u64;
        let mut from = aligned;
        let mut first_page = true;
        // Where the next byte to send lies in the part: blocks must follow one another.
        let mut pos = want_s;
        loop {
            let (page, more) = block_page(store, part, from).await?;
            if first_page && page.first().is_none_or(|(off, _)| *off > want_s) && from > 0 {
                from = 0;
                first_page = false;
                continue;
            }
            first_page = false;
            let Some((last, _)) = page.last() else { break };
            from = last + 1;
            let wanted = page.into_iter().filter(|(off, block)| {
                let b_end = off + block.size as u64;
                b_end > want_s && *off < want_e
            });
            // Each fetch is a task of its own: it runs (and reads its answer off the
            // connection, whose flow-control window other calls share) while this loop waits
            // for a slow client. Dropping the stream (the client went away) aborts them.
            let fetches = wanted.map(|(off, block)| {
                let b_end = off + block.size as u64;
                let (store, version, key) = (store.clone(), part.data_version.clone(), key.cloned());
                let task = tokio::spawn(
                    async move { fetch_block(&store, &block, &version, key.as_ref()).await }.in_current_span(),
                );
                AbortOnDropHandle::new(task).map(move |joined| match joined {
                    Ok(r) => r.map(|data| (off, b_end, data)),
                    Err(e) => Err(s3_error!(InternalError, "a block fetch failed: {e}")),
                })
            });
            let mut fetched = futures::stream::iter(fetches).buffered(FETCH_AHEAD);
            while let Some(got) = fetched.next().await {
                let (off, b_end, data) = got?;
                if off > pos {
                    return Err(s3_error!(InternalError, "the object's block list has a gap"));
                }
                let s = (pos - off) as usize;
                let e = (want_e.min(b_end) - off) as usize;
                pos = off + e as u64;
                if tx.send(Ok(data.slice(s..e))).await.is_err() {
                    return Ok(()); // the client went away
                }
            }
            if !more {
                break;
            }
        }
        if pos != want_e {
            return Err(s3_error!(InternalError, "the object's data ends before its size"));
        }
        part_start = part_end;
    }
    Ok(())
}
