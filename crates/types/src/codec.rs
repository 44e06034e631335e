//! Helpers for the canonical encoding: length-prefixed UTF-8 strings and bounded lists.

use bytes::BufMut;
use commonware_codec::{Buf, EncodeSize, Error as CodecError, RangeCfg, Read, Write};

/// Writes a string as a varint length followed by its UTF-8 bytes.
pub fn write_string(s: &str, buf: &mut impl BufMut) {
    s.len().write(buf);
    buf.put_slice(s.as_bytes());
}

/// Encoded size of a string written by [`write_string`].
pub fn string_size(s: &str) -> usize {
    s.len().encode_size() + s.len()
}

/// Reads a string of at most `max` bytes; `field` names it in the error.
pub fn read_string(
    buf: &mut impl Buf,
    field: &'static str,
    max: usize,
) -> Result<String, CodecError> {
    let len = usize::read_cfg(buf, &RangeCfg::from(..=usize::MAX))
        .map_err(|_| CodecError::Invalid(field, "bad length prefix"))?;
    if len > max {
        return Err(CodecError::Invalid(field, "longer than its limit"));
    }
    let raw = u8::read_vec(buf, len, &())?;
    String::from_utf8(raw).map_err(|_| CodecError::Invalid(field, "not valid UTF-8"))
}

/// Reads a list of at most `max` items; `field` names it in the error.
pub fn read_vec_bounded<T: Read<Cfg = ()>>(
    buf: &mut impl Buf,
    field: &'static str,
    max: usize,
) -> Result<Vec<T>, CodecError> {
    let len = usize::read_cfg(buf, &RangeCfg::from(..=usize::MAX))
        .map_err(|_| CodecError::Invalid(field, "bad length prefix"))?;
    if len > max {
        return Err(CodecError::Invalid(field, "more items than its limit"));
    }
    T::read_vec(buf, len, &())
}
