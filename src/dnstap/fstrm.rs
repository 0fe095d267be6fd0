//! The writer's side of Frame Streams (fstrm), the framing dnstap travels
//! in, in its bidirectional mode over a stream socket: READY → ACCEPT →
//! START, data frames, then STOP → FINISH (the fstrm protocol
//! specification, "control frames" and "bidirectional").
//!
//! A data frame is a 32-bit big-endian length and the payload. A control
//! frame is an escape (a zero length), the control frame's length, its
//! type, and fields; the only field is the content type.

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What our data frames hold.
pub const CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";

const CONTROL_ACCEPT: u32 = 0x01;
const CONTROL_START: u32 = 0x02;
const CONTROL_STOP: u32 = 0x03;
const CONTROL_READY: u32 = 0x04;
const CONTROL_FINISH: u32 = 0x05;
const FIELD_CONTENT_TYPE: u32 = 0x01;

/// The largest control frame we accept from a reader: the specification
/// caps it at 512 bytes.
const MAX_CONTROL: usize = 512;

/// A control frame of `kind`, with our content type when `typed`.
fn control_frame(kind: u32, typed: bool) -> Vec<u8> {
    let mut body = kind.to_be_bytes().to_vec();
    if typed {
        body.extend_from_slice(&FIELD_CONTENT_TYPE.to_be_bytes());
        body.extend_from_slice(&(CONTENT_TYPE.len() as u32).to_be_bytes());
        body.extend_from_slice(CONTENT_TYPE);
    }
    let mut f = 0u32.to_be_bytes().to_vec();
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&body);
    f
}

/// Appends one data frame holding `payload`.
pub fn push_data_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("fstrm: {msg}"))
}

/// Reads one control frame: its type and the content types it lists.
async fn read_control<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<(u32, Vec<Vec<u8>>)> {
    if r.read_u32().await? != 0 {
        return Err(bad("expected a control frame, got data"));
    }
    let len = r.read_u32().await? as usize;
    if !(4..=MAX_CONTROL).contains(&len) {
        return Err(bad("control frame length out of range"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    let u32_at = |b: &[u8], i: usize| -> Option<u32> {
        b.get(i..i + 4)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map(u32::from_be_bytes)
    };
    let kind = u32_at(&body, 0).ok_or_else(|| bad("short control frame"))?;
    let mut types = Vec::new();
    let mut at = 4;
    while at < body.len() {
        let (Some(field), Some(flen)) = (u32_at(&body, at), u32_at(&body, at + 4)) else {
            return Err(bad("truncated control field"));
        };
        let start = at + 8;
        let value = body
            .get(start..start + flen as usize)
            .ok_or_else(|| bad("control field overruns its frame"))?;
        if field == FIELD_CONTENT_TYPE {
            types.push(value.to_vec());
        }
        at = start + flen as usize;
    }
    Ok((kind, types))
}

/// READY with our content type, the reader's ACCEPT (which must list it),
/// START. After this, data frames may be written.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> io::Result<()> {
    s.write_all(&control_frame(CONTROL_READY, true)).await?;
    let (kind, types) = read_control(s).await?;
    if kind != CONTROL_ACCEPT {
        return Err(bad("reader did not ACCEPT"));
    }
    if !types.iter().any(|t| t == CONTENT_TYPE) {
        return Err(bad("reader does not accept protobuf:dnstap.Dnstap"));
    }
    s.write_all(&control_frame(CONTROL_START, true)).await?;
    s.flush().await
}

/// STOP, then waits for the reader's FINISH.
pub async fn finish<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> io::Result<()> {
    s.write_all(&control_frame(CONTROL_STOP, false)).await?;
    s.flush().await?;
    let (kind, _) = read_control(s).await?;
    if kind != CONTROL_FINISH {
        return Err(bad("reader did not FINISH"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn handshake_and_finish_follow_the_bidirectional_sequence() {
        let (mut w, mut r) = tokio::io::duplex(4096);
        let reader = tokio::spawn(async move {
            let (kind, types) = read_control(&mut r).await.unwrap();
            assert_eq!(kind, CONTROL_READY);
            assert_eq!(types, vec![CONTENT_TYPE.to_vec()]);
            r.write_all(&control_frame(CONTROL_ACCEPT, true))
                .await
                .unwrap();
            let (kind, _) = read_control(&mut r).await.unwrap();
            assert_eq!(kind, CONTROL_START);
            assert_eq!(r.read_u32().await.unwrap(), 3);
            let mut p = [0u8; 3];
            r.read_exact(&mut p).await.unwrap();
            assert_eq!(&p, b"abc");
            let (kind, _) = read_control(&mut r).await.unwrap();
            assert_eq!(kind, CONTROL_STOP);
            r.write_all(&control_frame(CONTROL_FINISH, false))
                .await
                .unwrap();
        });
        handshake(&mut w).await.unwrap();
        let mut f = Vec::new();
        push_data_frame(b"abc", &mut f);
        w.write_all(&f).await.unwrap();
        finish(&mut w).await.unwrap();
        reader.await.unwrap();
    }

    #[tokio::test]
    async fn a_reader_for_another_content_type_is_refused() {
        let (mut w, mut r) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let _ = read_control(&mut r).await;
            let mut f = 0u32.to_be_bytes().to_vec();
            let body: Vec<u8> = [
                &CONTROL_ACCEPT.to_be_bytes()[..],
                &FIELD_CONTENT_TYPE.to_be_bytes(),
                &4u32.to_be_bytes(),
                b"json",
            ]
            .concat();
            f.extend_from_slice(&(body.len() as u32).to_be_bytes());
            f.extend_from_slice(&body);
            let _ = r.write_all(&f).await;
        });
        assert!(handshake(&mut w).await.is_err());
    }

    #[tokio::test]
    async fn an_oversized_or_truncated_control_frame_is_an_error_not_a_panic() {
        for frame in [
            [0u32.to_be_bytes(), 100_000u32.to_be_bytes()].concat(),
            [
                &0u32.to_be_bytes()[..],
                &12u32.to_be_bytes(),
                &CONTROL_ACCEPT.to_be_bytes(),
                &FIELD_CONTENT_TYPE.to_be_bytes(),
                &999u32.to_be_bytes(),
            ]
            .concat(),
        ] {
            let mut r = &frame[..];
            assert!(read_control(&mut r).await.is_err());
        }
    }
}
