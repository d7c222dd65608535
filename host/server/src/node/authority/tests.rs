//! The rewriter on hand-built frames, and h2 itself (through tonic) before and after it.

use super::*;

const SETTINGS_EMPTY: [u8; 9] = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];

fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    put_frame_unchecked(&mut out, kind, flags, stream_id, payload);
    out.to_vec()
}

fn put_frame_unchecked(out: &mut BytesMut, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
    let [_, hi, mid, lo] = u32::try_from(payload.len())
        .expect("test frames are small")
        .to_be_bytes();
    out.put_slice(&[hi, mid, lo, kind, flags]);
    out.put_u32(stream_id);
    out.put_slice(payload);
}

fn request_fields(authority: &str) -> Fields {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/etcdserverpb.Maintenance/Status"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    .iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

/// What a client sends: the preface, SETTINGS, then per stream a HEADERS block (indexed into
/// the client's table, as grpc-go does) and a DATA frame.
fn client_bytes(authority: &str, streams: u32) -> Vec<u8> {
    let mut encoder = loona_hpack::Encoder::new();
    let mut out = PREFACE.to_vec();
    out.extend_from_slice(&SETTINGS_EMPTY);
    for n in 0..streams {
        let stream_id = 1 + 2 * n;
        let fields = request_fields(authority);
        let block = encoder.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
        out.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, stream_id, &block));
        out.extend(frame(0x0, FLAG_END_STREAM, stream_id, &[0, 0, 0, 0, 0]));
    }
    out
}

fn rewrite_all(bytes: &[u8]) -> Result<(Rewriter, Vec<u8>), RepairError> {
    let mut rewriter = Rewriter::new();
    let mut input = BytesMut::from(bytes);
    let mut output = BytesMut::new();
    rewriter.process(&mut input, &mut output)?;
    assert!(input.is_empty(), "{} bytes left unprocessed", input.len());
    Ok((rewriter, output.to_vec()))
}

/// The header blocks h2 would decode from `bytes` (with a fresh decoder, as h2 starts), and
/// every other frame as (kind, flags, stream, payload).
#[derive(Debug, Default, PartialEq)]
struct Seen {
    blocks: Vec<(u32, Fields)>,
    others: Vec<(u8, u8, u32, Vec<u8>)>,
}

fn as_h2_sees(bytes: &[u8]) -> Seen {
    decode_frames(bytes, false)
}

/// With `fresh_table_per_block`, every block is decoded by a new decoder: this only works if no
/// block relies on the dynamic table.
fn decode_frames(bytes: &[u8], fresh_table_per_block: bool) -> Seen {
    assert_eq!(&bytes[..PREFACE.len()], PREFACE);
    let mut rest = &bytes[PREFACE.len()..];
    let mut decoder = loona_hpack::Decoder::new();
    let mut seen = Seen::default();
    let mut block: Option<(u32, Vec<u8>)> = None;
    while !rest.is_empty() {
        let length = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        assert!(
            length <= HTTP2_FRAME_PAYLOAD_BYTES_MIN,
            "frame of {length} bytes"
        );
        let (kind, flags) = (rest[3], rest[4]);
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
        let payload = &rest[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + length];
        rest = &rest[FRAME_HEADER_BYTES + length..];
        match kind {
            FRAME_HEADERS => {
                let (_, fragment) = headers_payload(flags, payload).expect("HEADERS payload");
                block = Some((stream, fragment.to_vec()));
            }
            FRAME_CONTINUATION => {
                block
                    .as_mut()
                    .expect("CONTINUATION after HEADERS")
                    .1
                    .extend(payload);
            }
            _ => {
                seen.others.push((kind, flags, stream, payload.to_vec()));
                continue;
            }
        }
        if flags & FLAG_END_HEADERS != 0 {
            let (stream, fragment) = block.take().expect("a block");
            if fresh_table_per_block {
                decoder = loona_hpack::Decoder::new();
            }
            seen.blocks
                .push((stream, decoder.decode(&fragment).expect("valid HPACK")));
        }
    }
    seen
}

#[test]
fn a_well_formed_authority_passes_through_byte_for_byte() -> Result<(), RepairError> {
    let sent = client_bytes("127.0.0.1:2379", 3);
    let (rewriter, received) = rewrite_all(&sent)?;
    assert_eq!(received, sent);
    assert!(rewriter.passes_through());
    Ok(())
}

#[test]
fn a_url_authority_is_cut_to_host_and_port_on_every_stream() -> Result<(), RepairError> {
    let sent = client_bytes("http://127.0.0.1:2379", 3);
    let (rewriter, received) = rewrite_all(&sent)?;
    assert!(rewriter.repairs());
    let seen = as_h2_sees(&received);
    let expected = as_h2_sees(&client_bytes("127.0.0.1:2379", 3));
    assert_eq!(seen, expected);
    assert_eq!(seen.blocks.len(), 3);
    // Nothing indexed, nothing referenced: h2's dynamic table stays empty.
    assert_eq!(decode_frames(&received, true), seen);
    Ok(())
}

#[test]
fn bytes_arriving_one_at_a_time_give_the_same_output() -> Result<(), RepairError> {
    for authority in ["127.0.0.1:2379", "http://127.0.0.1:2379"] {
        let sent = client_bytes(authority, 2);
        let (_, whole) = rewrite_all(&sent)?;
        let mut rewriter = Rewriter::new();
        let mut input = BytesMut::new();
        let mut output = BytesMut::new();
        for byte in &sent {
            input.put_u8(*byte);
            rewriter.process(&mut input, &mut output)?;
        }
        assert!(input.is_empty());
        assert_eq!(output.to_vec(), whole, "{authority}");
    }
    Ok(())
}

#[test]
fn padded_prioritized_and_continued_blocks_are_understood() -> Result<(), RepairError> {
    let mut encoder = loona_hpack::Encoder::new();
    let fields = request_fields("http://example.com:2379/");
    let block = encoder.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
    let (head, tail) = block.split_at(10);
    let mut payload = vec![3]; // pad length
    payload.extend_from_slice(&[0x80, 0, 0, 0, 15]); // exclusive dependency on 0, weight 16
    payload.extend_from_slice(head);
    payload.extend_from_slice(&[0, 0, 0]);
    let mut sent = PREFACE.to_vec();
    sent.extend(frame(
        FRAME_HEADERS,
        FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
        1,
        &payload,
    ));
    sent.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, tail));
    let (_, received) = rewrite_all(&sent)?;
    let seen = as_h2_sees(&received);
    let expected = request_fields("example.com:2379");
    assert_eq!(seen.blocks, vec![(1, expected)]);
    // END_STREAM and the priority fields survive.
    let header = &received[PREFACE.len()..PREFACE.len() + FRAME_HEADER_BYTES];
    assert_eq!(
        header[4],
        FLAG_PRIORITY | FLAG_END_STREAM | FLAG_END_HEADERS
    );
    let priority = &received[PREFACE.len() + FRAME_HEADER_BYTES..][..PRIORITY_BYTES];
    assert_eq!(priority, &[0x80, 0, 0, 0, 15]);
    Ok(())
}

#[test]
fn a_block_past_the_bound_passes_through_unless_repairing() -> Result<(), RepairError> {
    let big = "x".repeat(HTTP2_HEADER_BLOCK_BYTES_MAX);
    let mut encoder = loona_hpack::Encoder::new();
    let huge = encoder.encode([(&b"x-big"[..], big.as_bytes())]);
    let mut first = PREFACE.to_vec();
    first.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &huge));
    let (rewriter, received) = rewrite_all(&first)?;
    assert!(rewriter.passes_through());
    assert_eq!(received, first);

    let mut repaired = client_bytes("http://127.0.0.1:2379", 1);
    repaired.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &huge));
    assert!(matches!(
        rewrite_all(&repaired),
        Err(RepairError::BlockTooLarge)
    ));
    Ok(())
}

#[test]
fn a_header_list_past_the_bound_closes_a_repaired_connection() {
    let mut encoder = loona_hpack::Encoder::new();
    let mut sent = PREFACE.to_vec();
    let fields = request_fields("http://127.0.0.1:2379");
    let first = encoder.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
    sent.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &first));
    // Small on the wire, large decoded: one table entry named again and again.
    let value = "v".repeat(HPACK_TABLE_BYTES - 100);
    let big = (&b"x-big"[..], value.as_bytes());
    let mut block = encoder.encode([big]);
    for _ in 0..HTTP2_HEADER_LIST_BYTES_MAX / HPACK_TABLE_BYTES * 2 {
        block.extend(encoder.encode([big]));
    }
    assert!(block.len() < HTTP2_HEADER_LIST_BYTES_MAX);
    sent.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &block));
    assert!(matches!(rewrite_all(&sent), Err(RepairError::ListTooLarge)));
}

#[test]
fn a_block_interrupted_by_another_frame_is_left_to_h2() -> Result<(), RepairError> {
    let mut sent = PREFACE.to_vec();
    sent.extend(frame(FRAME_HEADERS, 0, 1, &[0x82]));
    sent.extend(SETTINGS_EMPTY);
    let (rewriter, received) = rewrite_all(&sent)?;
    assert!(rewriter.passes_through());
    assert_eq!(received, sent);
    Ok(())
}

#[test]
fn what_is_not_http2_passes_through() -> Result<(), RepairError> {
    let sent = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let (rewriter, received) = rewrite_all(sent)?;
    assert!(rewriter.passes_through());
    assert_eq!(received, sent);
    Ok(())
}

#[test]
fn authorities_are_repaired_as_far_as_they_can_be() {
    let cases: [(&str, Option<&str>); 8] = [
        ("http://127.0.0.1:2379", Some("127.0.0.1:2379")),
        ("https://[::1]:2379/", Some("[::1]:2379")),
        ("127.0.0.1:2379/v3", Some("127.0.0.1:2379")),
        ("etcd+grpc://host:1?x=y", Some("host:1")),
        // etcd 3.5.0's clientv3 sent this one (etcd-io/etcd#13192).
        ("#initially=[https://example.com:2379]", None),
        ("unix:///run/etcd.sock", None),
        ("two words", None),
        ("", None),
    ];
    for (value, expected) in cases {
        assert!(!is_well_formed(value.as_bytes()), "{value}");
        assert_eq!(
            repaired_authority(value.as_bytes()),
            expected.map(str::as_bytes),
            "{value:?}"
        );
    }
}

/// Through a real tonic server (h2 inside): the health check with `:authority:
/// http://127.0.0.1:PORT` is reset by h2 as it is, and answered through [`AuthorityRepair`].
mod through_h2 {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const RST_STREAM: u8 = 0x3;
    /// The health check's request: an empty `HealthCheckRequest` in a gRPC frame.
    const EMPTY_GRPC_MESSAGE: [u8; 5] = [0, 0, 0, 0, 0];

    async fn serve(repair: bool) -> anyhow::Result<std::net::SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (_, health) = tonic_health::server::health_reporter();
        let router = tonic::transport::Server::builder().add_service(health);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        if repair {
            let incoming = tokio_stream::StreamExt::map(incoming, |s| s.map(AuthorityRepair::new));
            tokio::spawn(router.serve_with_incoming(incoming));
        } else {
            tokio::spawn(router.serve_with_incoming(incoming));
        }
        Ok(addr)
    }

    /// Sends one health check; returns the stream's fate: `Ok(grpc-status)` or
    /// `Err(RST_STREAM error code)`.
    async fn check(
        addr: std::net::SocketAddr,
        authority: &str,
    ) -> anyhow::Result<Result<u32, u32>> {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        let mut encoder = loona_hpack::Encoder::new();
        let fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/grpc.health.v1.Health/Check"),
            (b":authority", authority.as_bytes()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ];
        let mut sent = PREFACE.to_vec();
        sent.extend_from_slice(&SETTINGS_EMPTY);
        sent.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &encoder.encode(fields),
        ));
        sent.extend(frame(0x0, FLAG_END_STREAM, 1, &EMPTY_GRPC_MESSAGE));
        conn.write_all(&sent).await?;
        let mut decoder = loona_hpack::Decoder::new();
        loop {
            let mut header = [0u8; FRAME_HEADER_BYTES];
            conn.read_exact(&mut header).await?;
            let length =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let mut payload = vec![0u8; length];
            conn.read_exact(&mut payload).await?;
            let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
            if stream != 1 {
                continue;
            }
            match header[3] {
                RST_STREAM => {
                    let code = payload
                        .get(..4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                    return Ok(Err(code.unwrap_or(u32::MAX)));
                }
                FRAME_HEADERS => {
                    let (_, fragment) = headers_payload(header[4], &payload)?;
                    let fields = decoder
                        .decode(fragment)
                        .map_err(|e| anyhow::anyhow!("server HPACK: {e:?}"))?;
                    if let Some((_, status)) = fields.iter().find(|(n, _)| n == b"grpc-status") {
                        return Ok(Ok(std::str::from_utf8(status)?.parse()?));
                    }
                }
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn h2_resets_a_url_authority_and_answers_it_repaired() -> anyhow::Result<()> {
        const PROTOCOL_ERROR: u32 = 0x1;
        let plain = serve(false).await?;
        let repaired = serve(true).await?;
        let url = |addr: std::net::SocketAddr| format!("http://{addr}");
        // The failure etcdctl 3.4 meets.
        assert_eq!(check(plain, &url(plain)).await?, Err(PROTOCOL_ERROR));
        assert_eq!(check(plain, &plain.to_string()).await?, Ok(0));
        // grpc-status 0: SERVING answered.
        assert_eq!(check(repaired, &url(repaired)).await?, Ok(0));
        assert_eq!(check(repaired, &repaired.to_string()).await?, Ok(0));
        assert_eq!(check(repaired, "#initially=[x]").await?, Ok(0));
        Ok(())
    }
}
