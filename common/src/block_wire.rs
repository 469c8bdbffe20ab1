//! GetBlock on the wire without copying a block's bytes in user space. The call is the
//! `BlockService.GetBlock` of block.proto, plain gRPC that any client or server of the
//! contract speaks; only the two ends in this project handle its replies by hand. tonic
//! copies every message into its encode buffer on the sending side, and on the receiving
//! side copies every HTTP/2 frame into its decode buffer (and again when that buffer grows
//! to the message's length). On 1 MiB GETs through a separate frontend those copies were
//! 8.5% of a frontend's CPU time and about 7% of the data node's (BENCHMARKS.md). Here
//! the data node sends the block's buffer as the frame payload it already is (after a few
//! bytes of framing), and the reader takes a message that arrived in one frame as a slice
//! of that frame; a message split across frames is joined (one copy, as before).
//!
//! What is hand-made is the gRPC length-prefixed message framing (a flag byte, a 4-byte
//! length), the status in headers or trailers, and the protobuf prefix of `BlockChunk`'s
//! one field; prost decodes every message, so any valid encoding is read.

use std::collections::VecDeque;
use std::convert::Infallible;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use hangar_proto::block::{BlockChunk, GetBlockRequest};
use http_body_util::BodyExt;
use prost::Message;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::{Code, Status};

use crate::local::BlockChunks;
use crate::rpc::{AuthChannel, BLOCK_REPLY_CHUNK, MAX_MESSAGE};

/// The method's path, as tonic routes it.
pub const GET_BLOCK_PATH: &str = "/hangar.block.BlockService/GetBlock";
/// A gRPC message's prefix: the compression flag and the length (big-endian u32).
const PREFIX: usize = 5;
/// The largest GetBlock request a data node reads (a 32-byte hash and its framing).
const MAX_REQUEST: usize = 1024;

/// One gRPC message holding `msg`, uncompressed.
pub fn frame(msg: &impl Message) -> Bytes {
    let mut b = BytesMut::with_capacity(PREFIX + msg.encoded_len());
    b.put_u8(0);
    b.put_u32(msg.encoded_len() as u32);
    // Cannot fail: the capacity is reserved above.
    let _ = msg.encode(&mut b);
    b.freeze()
}

/// The reply of a GetBlock that found `data`: its body frames are, for each message of at
/// most `BLOCK_REPLY_CHUNK` bytes, the framing of one `BlockChunk` and a slice of the
/// block's buffer, then the trailers with status OK.
pub fn reply(data: Bytes) -> http::Response<Body> {
    let mut frames = Vec::with_capacity(2 * data.len().div_ceil(BLOCK_REPLY_CHUNK) + 1);
    for off in (0..data.len().max(1)).step_by(BLOCK_REPLY_CHUNK) {
        let piece = data.slice(off..(off + BLOCK_REPLY_CHUNK).min(data.len()));
        let field = prost::encoding::key_len(1) + prost::encoding::encoded_len_varint(piece.len() as u64);
        let mut head = BytesMut::with_capacity(PREFIX + field);
        head.put_u8(0);
        head.put_u32((field + piece.len()) as u32);
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut head);
        prost::encoding::encode_varint(piece.len() as u64, &mut head);
        frames.push(http_body::Frame::data(head.freeze()));
        frames.push(http_body::Frame::data(piece));
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    frames.push(http_body::Frame::trailers(trailers));
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames.into_iter().map(Ok::<_, Infallible>)));
    let mut resp = http::Response::new(Body::new(body));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    resp
}

/// The request of a GetBlock call as it arrived: its metadata (layout version, trace
/// context, the cluster secret) and the one message of its body.
pub async fn read_request(req: http::Request<Body>) -> Result<tonic::Request<GetBlockRequest>, Status> {
    let (parts, body) = req.into_parts();
    let bytes = http_body_util::Limited::new(body, MAX_REQUEST)
        .collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("GetBlock request body: {e}")))?
        .to_bytes();
    let mut messages = Messages::default();
    messages.push(bytes);
    let msg = match messages.next()? {
        Some(m) if messages.is_empty() => m,
        _ => return Err(Status::invalid_argument("GetBlock takes exactly one request message")),
    };
    let msg = GetBlockRequest::decode(msg).map_err(|e| Status::invalid_argument(format!("GetBlock request: {e}")))?;
    Ok(tonic::Request::from_parts(tonic::metadata::MetadataMap::from_headers(parts.headers), parts.extensions, msg))
}

/// Calls GetBlock on `channel` (which adds the cluster secret) and streams the block's
/// chunks: each message that arrived in one HTTP/2 frame is a slice of that frame.
pub async fn get_block(
    channel: AuthChannel,
    req: tonic::Request<GetBlockRequest>,
) -> Result<tonic::Response<BlockChunks>, Status> {
    let (metadata, extensions, msg) = req.into_parts();
    let mut http_req = http::Request::new(Body::new(http_body_util::Full::new(frame(&msg))));
    *http_req.method_mut() = http::Method::POST;
    *http_req.uri_mut() = http::Uri::from_static(GET_BLOCK_PATH);
    *http_req.version_mut() = http::Version::HTTP_2;
    *http_req.headers_mut() = metadata.into_headers();
    *http_req.extensions_mut() = extensions;
    let h = http_req.headers_mut();
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    h.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    let mut channel = channel;
    std::future::poll_fn(|cx| channel.poll_ready(cx)).await.map_err(|e| Status::from_error(e.into()))?;
    let resp = channel.call(http_req).await.map_err(|e| Status::from_error(e.into()))?;
    // A status in the headers is a reply without a body ("trailers-only"): an error, or
    // (from another implementation) an OK with no message, which is a protocol error here.
    if let Some(status) = Status::from_header_map(resp.headers()) {
        return Err(if status.code() == Code::Ok {
            Status::internal("GetBlock answered OK without a block")
        } else {
            status
        });
    }
    let http_status = resp.status();
    if http_status != http::StatusCode::OK {
        return Err(Status::new(code_of_http(http_status), format!("GetBlock answered HTTP {http_status}")));
    }
    let reader = Reader { body: Body::new(resp.into_body()), messages: Messages::default(), ended: false };
    let chunks =
        futures::stream::try_unfold(reader, |mut r| async move { Ok(r.next_chunk().await?.map(|chunk| (chunk, r))) });
    Ok(tonic::Response::new(chunks.boxed()))
}

/// The gRPC code of an HTTP status that came without one (gRPC's HTTP-to-gRPC status
/// mapping).
fn code_of_http(s: http::StatusCode) -> Code {
    match s.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// A GetBlock reply's body, message by message.
struct Reader {
    body: Body,
    messages: Messages,
    ended: bool,
}

impl Reader {
    async fn next_chunk(&mut self) -> Result<Option<BlockChunk>, Status> {
        loop {
            if let Some(m) = self.messages.next()? {
                return BlockChunk::decode(m).map(Some).map_err(|e| Status::internal(format!("GetBlock reply: {e}")));
            }
            if self.ended {
                return Ok(None);
            }
            match self.body.frame().await {
                Some(Ok(f)) => match f.into_data() {
                    Ok(data) => self.messages.push(data),
                    Err(f) => {
                        let trailers = f.into_trailers().unwrap_or_default();
                        match Status::from_header_map(&trailers) {
                            Some(s) if s.code() == Code::Ok => self.ended = true,
                            Some(s) => return Err(s),
                            None => return Err(Status::internal("GetBlock reply ended without a grpc-status")),
                        }
                        if !self.messages.is_empty() {
                            return Err(Status::internal("GetBlock reply ended inside a message"));
                        }
                    }
                },
                Some(Err(e)) => return Err(Status::from_error(e.into())),
                None => return Err(Status::internal("GetBlock reply ended without a grpc-status")),
            }
        }
    }
}

/// Bytes received, not yet taken as messages: the frames as they came.
#[derive(Default)]
struct Messages {
    frames: VecDeque<Bytes>,
    len: usize,
}

impl Messages {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.frames.push_back(b);
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next whole message's bytes (its prefix dropped), if it has all arrived: a
    /// slice of the frame that holds it, or the frames it spans joined.
    fn next(&mut self) -> Result<Option<Bytes>, Status> {
        if self.len < PREFIX {
            return Ok(None);
        }
        let mut prefix = [0u8; PREFIX];
        let mut filled = 0;
        for f in &self.frames {
            let n = (PREFIX - filled).min(f.len());
            prefix[filled..filled + n].copy_from_slice(&f[..n]);
            filled += n;
            if filled == PREFIX {
                break;
            }
        }
        if prefix[0] != 0 {
            return Err(Status::internal("GetBlock message is compressed; none was asked for"));
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(Status::out_of_range(format!("GetBlock message of {len} bytes, over {MAX_MESSAGE}")));
        }
        if self.len < PREFIX + len {
            return Ok(None);
        }
        self.take(PREFIX);
        Ok(Some(self.take(len)))
    }

    /// The first `n` bytes (all of which have arrived): without a copy when one frame
    /// holds them.
    fn take(&mut self, n: usize) -> Bytes {
        self.len -= n;
        let Some(front) = self.frames.front_mut() else { return Bytes::new() };
        if front.len() >= n {
            let b = front.split_to(n);
            if front.is_empty() {
                self.frames.pop_front();
            }
            return b;
        }
        let mut joined = BytesMut::with_capacity(n);
        while joined.len() < n {
            let Some(mut f) = self.frames.pop_front() else { break };
            let want = n - joined.len();
            if f.len() > want {
                joined.put_slice(&f.split_to(want));
                self.frames.push_front(f);
            } else {
                joined.put_slice(&f);
            }
        }
        joined.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(data: &[u8]) -> BlockChunk {
        BlockChunk { data: Bytes::copy_from_slice(data) }
    }

    /// Every way a reply's bytes can be cut into frames gives the same messages, and a
    /// message within one frame is a slice of it (no copy).
    #[test]
    fn messages_come_out_whole_however_the_frames_cut_them() {
        let (a, b) = (frame(&chunk(b"hello block")), frame(&chunk(&[7u8; 300])));
        let wire: Vec<u8> = [a.as_ref(), b.as_ref()].concat();
        for cut1 in 0..=wire.len() {
            for cut2 in [cut1, (cut1 + 3).min(wire.len()), wire.len()] {
                let mut m = Messages::default();
                for piece in [&wire[..cut1], &wire[cut1..cut2], &wire[cut2..]] {
                    m.push(Bytes::copy_from_slice(piece));
                }
                let first = BlockChunk::decode(m.next().unwrap().unwrap()).unwrap();
                let second = BlockChunk::decode(m.next().unwrap().unwrap()).unwrap();
                assert_eq!(first, chunk(b"hello block"), "cut at {cut1}/{cut2}");
                assert_eq!(second, chunk(&[7u8; 300]));
                assert!(m.next().unwrap().is_none() && m.is_empty());
            }
        }
        let one = frame(&chunk(&[1u8; 1000]));
        let mut m = Messages::default();
        m.push(one.clone());
        let msg = m.next().unwrap().unwrap();
        assert_eq!(msg.as_ptr(), one[PREFIX..].as_ptr(), "a message within one frame is not copied");
    }

    #[test]
    fn a_partial_message_waits_and_a_bad_prefix_is_refused() {
        let f = frame(&chunk(b"abc"));
        let mut m = Messages::default();
        m.push(f.slice(..f.len() - 1));
        assert!(m.next().unwrap().is_none());
        m.push(f.slice(f.len() - 1..));
        assert!(m.next().unwrap().is_some());
        let mut compressed = BytesMut::from(&f[..]);
        compressed[0] = 1;
        let mut m = Messages::default();
        m.push(compressed.freeze());
        assert_eq!(m.next().unwrap_err().code(), Code::Internal);
        let mut huge = Messages::default();
        huge.push(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]));
        assert_eq!(huge.next().unwrap_err().code(), Code::OutOfRange);
    }

    /// The hand-made reply is what prost would encode, so tonic's own client reads it.
    #[tokio::test]
    async fn a_reply_is_the_protobuf_encoding_of_the_chunk() {
        let big: Bytes = (0..BLOCK_REPLY_CHUNK + 1000).map(|i| (i % 251) as u8).collect();
        for data in [Bytes::new(), Bytes::from_static(b"x"), Bytes::from(vec![9u8; 200_000]), big] {
            let resp = reply(data.clone());
            assert_eq!(resp.headers()[http::header::CONTENT_TYPE], "application/grpc");
            let collected = resp.into_body().collect().await.unwrap();
            assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
            let mut m = Messages::default();
            m.push(collected.to_bytes());
            let mut got = Vec::new();
            while let Some(msg) = m.next().unwrap() {
                assert!(msg.len() <= BLOCK_REPLY_CHUNK + 16, "messages stay within the reply chunk");
                let c = BlockChunk::decode(msg.clone()).unwrap();
                if !c.data.is_empty() {
                    assert_eq!(msg, chunk(&c.data).encode_to_vec(), "the same bytes prost writes");
                }
                got.extend_from_slice(&c.data);
            }
            assert_eq!(got, data, "{} bytes", data.len());
        }
    }
}
