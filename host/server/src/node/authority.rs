//! Accepts the `:authority` values etcd accepts and h2 refuses, on the client port only.
//!
//! etcdctl 3.4 sends an endpoint given as `http://127.0.0.1:2379` whole as the HTTP/2
//! `:authority` of `endpoint status` and `endpoint hashkv` (its per-endpoint clients dial the
//! URL itself). grpc-go, and so etcd, never parses the authority; h2 does
//! (`h2::server::Peer::convert_poll_message`, through `http::uri::Authority`) and resets the
//! stream with PROTOCOL_ERROR, so etcdctl fails against Baton. h2 has no option to relax that.
//!
//! [`AuthorityRepair`] wraps each accepted connection's read side. It follows the client's
//! frames up to the end of the first header block and decodes it with HPACK:
//! - `:authority` well-formed or absent (every other client): the block and everything after it
//!   pass through untouched, and the wrapper becomes a plain pass-through for the rest of the
//!   connection;
//! - otherwise, every header block of the connection is decoded with the client's dynamic table
//!   and re-encoded as literals that are never indexed, with `:authority` repaired
//!   ([`repaired_authority`]): h2's decoder table then stays empty, so it always agrees with
//!   what it receives. All other frames pass through unchanged.
//!
//! A client is assumed to send one authority per connection (gRPC channels do): a later block
//! with a malformed authority on a connection whose first was well-formed still meets h2's
//! refusal. Blocks are bounded by `HTTP2_HEADER_BLOCK_BYTES_MAX` and
//! `HTTP2_HEADER_LIST_BYTES_MAX`; on a repaired connection, a block past them (or one HPACK
//! cannot decode) closes the connection, as h2 itself does for a block it cannot decode.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use baton_limits::{
    HPACK_TABLE_BYTES, HTTP2_FRAME_PAYLOAD_BYTES_MIN, HTTP2_HEADER_BLOCK_BYTES_MAX,
    HTTP2_HEADER_LIST_BYTES_MAX, HTTP2_READ_CHUNK_BYTES,
};
use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_BYTES: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Stream dependency and weight carried by a HEADERS frame with the PRIORITY flag.
const PRIORITY_BYTES: usize = 5;
/// HTTP/2's per-field overhead in a header list's size (RFC 9113 §6.5.2).
const FIELD_OVERHEAD_BYTES: usize = 32;
const AUTHORITY: &[u8] = b":authority";

/// A header block's fields as (name, value), in order.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// Why a repaired connection was closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RepairError {
    #[error("a header block is larger than {HTTP2_HEADER_BLOCK_BYTES_MAX} bytes")]
    BlockTooLarge,
    #[error("a header list is larger than {HTTP2_HEADER_LIST_BYTES_MAX} bytes")]
    ListTooLarge,
    #[error("a HEADERS frame is malformed")]
    MalformedFrame,
    #[error("a header block is interrupted by a frame other than its CONTINUATION")]
    InterruptedBlock,
    #[error("HPACK: {0}")]
    Hpack(loona_hpack::decoder::DecoderError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the connection preface.
    Preface,
    /// Up to the end of the first header block.
    Inspect,
    /// Re-encoding every header block.
    Repair,
    /// Everything from here on goes through unchanged.
    PassThrough,
}

/// A header block being gathered from its HEADERS and CONTINUATION frames.
struct Block {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_BYTES]>,
    /// The HPACK bytes, padding removed.
    fragment: Vec<u8>,
    /// The frames as received, to pass the block on unchanged.
    raw: Vec<u8>,
}

/// The frame-level state machine, without I/O: bytes from the client in, bytes for h2 out.
pub(crate) struct Rewriter {
    phase: Phase,
    /// Payload bytes of the current frame still to copy through unchanged.
    pass_remaining: usize,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
}

impl Rewriter {
    pub(crate) fn new() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_BYTES);
        Self {
            phase: Phase::Preface,
            pass_remaining: 0,
            block: None,
            decoder,
        }
    }

    /// Whether everything from now on passes through unchanged.
    pub(crate) fn passes_through(&self) -> bool {
        self.phase == Phase::PassThrough
    }

    /// Whether this connection's header blocks are being re-encoded.
    #[cfg(test)]
    pub(crate) fn repairs(&self) -> bool {
        self.phase == Phase::Repair
    }

    /// Moves what can be decided from the front of `input` to `output`, rewritten where needed;
    /// leaves an incomplete frame header or header block in `input` for more bytes.
    pub(crate) fn process(
        &mut self,
        input: &mut BytesMut,
        output: &mut BytesMut,
    ) -> Result<(), RepairError> {
        loop {
            match self.phase {
                Phase::PassThrough => {
                    output.extend_from_slice(&input.split());
                    return Ok(());
                }
                Phase::Preface => {
                    let seen = input.len().min(PREFACE.len());
                    if input[..seen] != PREFACE[..seen] {
                        // Not HTTP/2 with prior knowledge: h2 will say so.
                        self.phase = Phase::PassThrough;
                    } else if seen < PREFACE.len() {
                        return Ok(());
                    } else {
                        output.extend_from_slice(&input.split_to(PREFACE.len()));
                        self.phase = Phase::Inspect;
                    }
                }
                Phase::Inspect | Phase::Repair => {
                    if !self.step(input, output)? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// One step over the frames; false when `input` holds too little to take one.
    fn step(&mut self, input: &mut BytesMut, output: &mut BytesMut) -> Result<bool, RepairError> {
        if self.pass_remaining > 0 {
            if input.is_empty() {
                return Ok(false);
            }
            let n = self.pass_remaining.min(input.len());
            output.extend_from_slice(&input.split_to(n));
            self.pass_remaining -= n;
            return Ok(true);
        }
        if input.len() < FRAME_HEADER_BYTES {
            return Ok(false);
        }
        let length =
            usize::from(input[0]) << 16 | usize::from(input[1]) << 8 | usize::from(input[2]);
        let kind = input[3];
        let stream_id = u32::from_be_bytes([input[5], input[6], input[7], input[8]]) & 0x7fff_ffff;
        let in_block = self.block.is_some();
        let is_header_frame = kind == FRAME_HEADERS || (kind == FRAME_CONTINUATION && in_block);
        if in_block
            && (kind != FRAME_CONTINUATION
                || self
                    .block
                    .as_ref()
                    .is_some_and(|b| b.stream_id != stream_id))
        {
            return self
                .give_up(RepairError::InterruptedBlock, output)
                .map(|()| true);
        }
        if !is_header_frame {
            output.extend_from_slice(&input.split_to(FRAME_HEADER_BYTES));
            self.pass_remaining = length;
            return Ok(true);
        }
        let buffered = self.block.as_ref().map_or(0, |b| b.raw.len());
        if buffered + FRAME_HEADER_BYTES + length > HTTP2_HEADER_BLOCK_BYTES_MAX {
            return self
                .give_up(RepairError::BlockTooLarge, output)
                .map(|()| true);
        }
        if input.len() < FRAME_HEADER_BYTES + length {
            return Ok(false);
        }
        let frame = input.split_to(FRAME_HEADER_BYTES + length);
        match self.gather(&frame) {
            Ok(true) => self.finish_block(output)?,
            Ok(false) => {}
            Err(e) => {
                // Put the frame back so a pass-through hands h2 the bytes it would have seen.
                let mut rest = BytesMut::from(&frame[..]);
                rest.unsplit(input.split());
                *input = rest;
                self.give_up(e, output)?;
            }
        }
        Ok(true)
    }

    /// Adds a HEADERS or CONTINUATION frame to the block; true when the block is complete.
    fn gather(&mut self, frame: &[u8]) -> Result<bool, RepairError> {
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER_BYTES..];
        let block = match self.block.as_mut() {
            Some(block) => {
                block.fragment.extend_from_slice(payload);
                block
            }
            None => {
                let (priority, fragment) = headers_payload(flags, payload)?;
                self.block.insert(Block {
                    stream_id,
                    end_stream: flags & FLAG_END_STREAM != 0,
                    priority,
                    fragment: fragment.to_vec(),
                    raw: Vec::new(),
                })
            }
        };
        block.raw.extend_from_slice(frame);
        Ok(flags & FLAG_END_HEADERS != 0)
    }

    /// Decodes a complete block; decides the connection's phase on its first block.
    fn finish_block(&mut self, output: &mut BytesMut) -> Result<(), RepairError> {
        let Some(block) = self.block.take() else {
            return Ok(());
        };
        let decoded = decode(&mut self.decoder, &block.fragment);
        if self.phase == Phase::Inspect {
            let fields = match decoded {
                Ok(fields) => fields,
                Err(_) => {
                    // h2 will refuse it for the same reason.
                    output.extend_from_slice(&block.raw);
                    self.phase = Phase::PassThrough;
                    return Ok(());
                }
            };
            let malformed = fields
                .iter()
                .any(|(name, value)| name == AUTHORITY && !is_well_formed(value));
            if !malformed {
                output.extend_from_slice(&block.raw);
                self.phase = Phase::PassThrough;
                return Ok(());
            }
            tracing::debug!("repairing a malformed :authority on this client connection");
            self.phase = Phase::Repair;
            encode_block(&block, &fields, output);
            return Ok(());
        }
        encode_block(&block, &decoded?, output);
        Ok(())
    }

    /// While inspecting, hands everything to h2 as it came (which judges it itself); while
    /// repairing, h2's table no longer matches the client's, so the connection must end.
    fn give_up(&mut self, error: RepairError, output: &mut BytesMut) -> Result<(), RepairError> {
        if self.phase == Phase::Repair {
            return Err(error);
        }
        if let Some(block) = self.block.take() {
            output.extend_from_slice(&block.raw);
        }
        self.phase = Phase::PassThrough;
        Ok(())
    }
}

/// A HEADERS payload's priority fields and header block fragment, padding removed.
fn headers_payload(
    flags: u8,
    mut payload: &[u8],
) -> Result<(Option<[u8; PRIORITY_BYTES]>, &[u8]), RepairError> {
    let mut padding = 0;
    if flags & FLAG_PADDED != 0 {
        let (&pad, rest) = payload.split_first().ok_or(RepairError::MalformedFrame)?;
        padding = usize::from(pad);
        payload = rest;
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        let (fields, rest) = payload
            .split_first_chunk::<PRIORITY_BYTES>()
            .ok_or(RepairError::MalformedFrame)?;
        priority = Some(*fields);
        payload = rest;
    }
    let end = payload
        .len()
        .checked_sub(padding)
        .ok_or(RepairError::MalformedFrame)?;
    Ok((priority, &payload[..end]))
}

/// The block's fields, in order, within `HTTP2_HEADER_LIST_BYTES_MAX`.
fn decode(
    decoder: &mut loona_hpack::Decoder<'static>,
    fragment: &[u8],
) -> Result<Fields, RepairError> {
    let mut fields = Vec::new();
    let mut size = 0usize;
    // The whole block is still decoded past the limit, to keep the table in step.
    decoder
        .decode_with_cb(fragment, |name: Cow<'_, [u8]>, value: Cow<'_, [u8]>| {
            size = size.saturating_add(name.len() + value.len() + FIELD_OVERHEAD_BYTES);
            if size <= HTTP2_HEADER_LIST_BYTES_MAX {
                fields.push((name.into_owned(), value.into_owned()));
            }
        })
        .map_err(RepairError::Hpack)?;
    if size > HTTP2_HEADER_LIST_BYTES_MAX {
        return Err(RepairError::ListTooLarge);
    }
    Ok(fields)
}

/// Writes the block's fields again as HPACK literals never indexed (so h2's dynamic table stays
/// empty), `:authority` repaired or dropped, cut into frames every server accepts.
fn encode_block(block: &Block, fields: &Fields, output: &mut BytesMut) {
    let mut hpack = Vec::new();
    for (name, value) in fields {
        let value = if name == AUTHORITY {
            match repaired_authority(value) {
                Some(value) => Cow::Borrowed(value),
                None => continue,
            }
        } else {
            Cow::Borrowed(value.as_slice())
        };
        // "Literal header field never indexed, new name" (RFC 7541 §6.2.3), no Huffman.
        hpack.push(0x10);
        encode_string(name, &mut hpack);
        encode_string(&value, &mut hpack);
    }
    let first_room = HTTP2_FRAME_PAYLOAD_BYTES_MIN - block.priority.map_or(0, |p| p.len());
    let first_len = hpack.len().min(first_room);
    let (first, mut rest) = hpack.split_at(first_len);
    let mut flags = 0;
    if block.end_stream {
        flags |= FLAG_END_STREAM;
    }
    if block.priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    let priority = block.priority.as_ref().map_or(&[][..], |p| &p[..]);
    put_frame(
        output,
        FRAME_HEADERS,
        flags,
        block.stream_id,
        &[priority, first],
    );
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(HTTP2_FRAME_PAYLOAD_BYTES_MIN));
        rest = tail;
        let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
        put_frame(output, FRAME_CONTINUATION, flags, block.stream_id, &[chunk]);
    }
}

fn put_frame(output: &mut BytesMut, kind: u8, flags: u8, stream_id: u32, parts: &[&[u8]]) {
    let length: usize = parts.iter().map(|p| p.len()).sum();
    debug_assert!(length <= HTTP2_FRAME_PAYLOAD_BYTES_MIN);
    let [_, hi, mid, lo] = u32::try_from(length).unwrap_or(u32::MAX).to_be_bytes();
    output.put_slice(&[hi, mid, lo, kind, flags]);
    output.put_u32(stream_id);
    for part in parts {
        output.put_slice(part);
    }
}

/// An HPACK string literal without Huffman coding: a 7-bit-prefix length, then the bytes.
fn encode_string(bytes: &[u8], out: &mut Vec<u8>) {
    // The length's own encoding cannot fail when writing to a Vec.
    let _ = loona_hpack::encoder::encode_integer_into(bytes.len(), 7, 0, out);
    out.extend_from_slice(bytes);
}

/// Exactly h2's test: what `http::uri::Authority` parses.
fn is_well_formed(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// The authority inside a malformed value, if one is there: `http://host:port/path` gives
/// `host:port`. None drops the field: a request needs no authority, and Baton reads none.
pub(crate) fn repaired_authority(value: &[u8]) -> Option<&[u8]> {
    let mut rest = value;
    if let Some(at) = rest.windows(3).position(|w| w == b"://") {
        let scheme = &rest[..at];
        let is_scheme = scheme.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
        if is_scheme {
            rest = &rest[at + 3..];
        }
    }
    if let Some(end) = rest.iter().position(|c| matches!(c, b'/' | b'?' | b'#')) {
        rest = &rest[..end];
    }
    is_well_formed(rest).then_some(rest)
}

/// A client connection whose reads go through a [`Rewriter`] until it decides to pass through.
pub(crate) struct AuthorityRepair<S> {
    inner: S,
    /// None once the connection passes through: reads then go straight to `inner`.
    filter: Option<Box<Filter>>,
}

struct Filter {
    rewriter: Rewriter,
    /// Read from the client, not yet processed.
    input: BytesMut,
    /// Processed, not yet handed to h2.
    output: BytesMut,
    eof: bool,
}

impl<S> AuthorityRepair<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            filter: Some(Box::new(Filter {
                rewriter: Rewriter::new(),
                input: BytesMut::new(),
                output: BytesMut::new(),
                eof: false,
            })),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityRepair<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let Some(filter) = this.filter.as_mut() else {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            };
            if !filter.output.is_empty() {
                let n = filter.output.len().min(buf.remaining());
                buf.put_slice(&filter.output[..n]);
                filter.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if filter.rewriter.passes_through() && filter.input.is_empty() {
                this.filter = None;
                continue;
            }
            if filter.eof {
                if filter.input.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                // A truncated frame: h2 sees it as the client sent it.
                let rest = filter.input.split();
                filter.output.unsplit(rest);
                continue;
            }
            let mut chunk = [0u8; HTTP2_READ_CHUNK_BYTES];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                filter.eof = true;
                continue;
            }
            filter.input.extend_from_slice(read.filled());
            filter
                .rewriter
                .process(&mut filter.input, &mut filter.output)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityRepair<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for AuthorityRepair<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests;
