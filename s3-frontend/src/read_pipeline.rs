//! The read pipeline: streams a byte range of an object from its blocks. A task fetches
//! blocks ahead into a small channel, so memory per request stays a few blocks and a
//! client that goes away stops the fetching.

use std::ops::Range;

use bytes::Bytes;
use hangar_proto::model::Object;
use s3s::dto::StreamingBlob;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::backend::Backend;
use crate::write_pipeline::block_page;

/// Blocks fetched ahead of the one being sent.
const READ_AHEAD: usize = 2;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReadError(String);

/// The bytes `range` of `obj` as a stream.
pub fn object_body(backend: &Backend, obj: &Object, range: Range<u64>) -> StreamingBlob {
    if let Some(data) = &obj.inline_data {
        let (s, e) = (range.start as usize, (range.end as usize).min(data.len()));
        let chunk = data.slice(s.min(e)..e);
        return StreamingBlob::wrap(futures::stream::iter([Ok::<_, ReadError>(chunk)]));
    }
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let backend = backend.clone();
    let parts = obj.parts.clone();
    tokio::spawn(async move {
        if let Err(e) = send_range(&backend, &parts, range, &tx).await {
            tracing::warn!(error = %e.0, "object read failed midway");
            let _ = tx.send(Err(e)).await;
        }
    });
    StreamingBlob::wrap(ReceiverStream::new(rx))
}

async fn send_range(
    backend: &Backend,
    parts: &[hangar_proto::model::PartData],
    range: Range<u64>,
    tx: &mpsc::Sender<Result<Bytes, ReadError>>,
) -> Result<(), ReadError> {
    let mut part_start = 0u64;
    for part in parts {
        let part_end = part_start + part.size;
        if part_end <= range.start || part_start >= range.end {
            part_start = part_end;
            continue;
        }
        // Offsets within this part.
        let (want_s, want_e) = (range.start.saturating_sub(part_start), range.end.min(part_end) - part_start);
        let mut from = 0u64;
        loop {
            let (page, more) = block_page(backend, &part.data_version, from, 256)
                .await
                .map_err(|e| ReadError(format!("listing blocks: {e:?}")))?;
            let Some(last) = page.last() else { break };
            from = last.0 + 1;
            for (off, block) in page {
                let b_end = off + block.size as u64;
                if b_end <= want_s || off >= want_e {
                    continue;
                }
                let data = fetch_block(backend, &block.hash, &part.data_version).await?;
                if data.len() as u64 != block.size as u64 {
                    return Err(ReadError("block has an unexpected size".into()));
                }
                let s = want_s.saturating_sub(off) as usize;
                let e = (want_e.min(b_end) - off) as usize;
                if tx.send(Ok(data.slice(s..e))).await.is_err() {
                    return Ok(()); // the client went away
                }
            }
            if !more {
                break;
            }
        }
        part_start = part_end;
    }
    Ok(())
}

async fn fetch_block(backend: &Backend, hash: &[u8], owner: &[u8]) -> Result<Bytes, ReadError> {
    backend.blocks.get(hash, owner).await.map_err(|e| ReadError(format!("fetching block {}: {e}", hex::encode(hash))))
}
