//! Crockford base32 without padding: the text form of keys, fingerprints and join tokens.
//!
//! Alphabet `0123456789ABCDEFGHJKMNPQRSTVWXYZ` (no I, L, O, U). Decoding is forgiving the way
//! Crockford specifies for people typing: case-insensitive, `I`/`L` read as `1`, `O` as `0`,
//! and `-` ignored (so a token may be grouped). Encoding is plain data formatting, not crypto.

/// The 32 symbols, in value order.
pub const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Why a text is not Crockford base32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Base32Error {
    #[error("character {ch:?} at position {pos} is not base32 (0-9, A-Z without I, L, O, U)")]
    BadChar { ch: char, pos: usize },
    #[error("text ends with stray bits (truncated or extended)")]
    StrayBits,
}

/// Encodes `bytes`, 5 bits per symbol, most significant first; no padding.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The value of one symbol, with Crockford's reading of look-alikes; `None` for others.
fn value(ch: char) -> Option<u32> {
    let up = ch.to_ascii_uppercase();
    let canonical = match up {
        'O' => '0',
        'I' | 'L' => '1',
        c => c,
    };
    ALPHABET
        .iter()
        .position(|&a| char::from(a) == canonical)
        .and_then(|p| u32::try_from(p).ok())
}

/// Decodes `text` (see the module docs). Leftover bits must be zero and fewer than 5, so a
/// text that is not exactly the encoding of whole bytes is refused.
pub fn decode(text: &str) -> Result<Vec<u8>, Base32Error> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for (pos, ch) in text.chars().enumerate() {
        if ch == '-' {
            continue;
        }
        let v = value(ch).ok_or(Base32Error::BadChar { ch, pos })?;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 5 || acc != 0 {
        return Err(Base32Error::StrayBits);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length round-trips, and the known vector matches Crockford's table.
    #[test]
    fn round_trip_and_known_vector() {
        assert_eq!(encode(b""), "");
        assert_eq!(encode(&[0xff]), "ZW");
        assert_eq!(encode(b"hello"), "D1JPRV3F");
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(decode(&encode(&bytes)), Ok(bytes));
        }
    }

    /// People's spellings decode the same; anything outside the alphabet is refused by position.
    #[test]
    fn forgiving_decoding_and_clear_errors() {
        assert_eq!(decode("d1jp-rv3f"), Ok(b"hello".to_vec()));
        assert_eq!(decode("ZW"), decode("zw"));
        assert_eq!(decode("0O"), decode("00"));
        assert_eq!(decode("1I"), decode("1L"));
        assert_eq!(
            decode("D1JPRU3F"),
            Err(Base32Error::BadChar { ch: 'U', pos: 5 })
        );
        // "ZX" leaves non-zero stray bits; one symbol alone cannot hold a byte.
        assert_eq!(decode("ZX"), Err(Base32Error::StrayBits));
        assert_eq!(decode("Z"), Err(Base32Error::StrayBits));
    }
}
