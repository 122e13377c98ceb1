//! Strict `application/x-www-form-urlencoded` decoding (bodies and query strings): unlike lossy
//! decoders, invalid UTF-8 after percent-decoding is an error, not a replacement character.

use percent_encoding::percent_decode;

use super::error::ApiError;

/// Decodes `input` into name/value pairs, in order; repeated names stay repeated.
pub fn pairs(input: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    input
        .split(|b| *b == b'&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, value) = match part.iter().position(|b| *b == b'=') {
                Some(i) => (&part[..i], &part[i + 1..]),
                None => (part, &b""[..]),
            };
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

fn decode(raw: &[u8]) -> Result<String, ApiError> {
    // `+` is a space; the rest is percent-decoding, which borrows what has no escape.
    let spaced: Vec<u8>;
    let raw = if raw.contains(&b'+') {
        spaced = raw
            .iter()
            .map(|b| if *b == b'+' { b' ' } else { *b })
            .collect();
        &spaced[..]
    } else {
        raw
    };
    percent_decode(raw)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| ApiError::bad("form data is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_repeated_names_plus_and_percent() {
        let got = pairs(b"topic=a&topic=b%2Fc&data=x+y&private").unwrap();
        let want = [
            ("topic", "a"),
            ("topic", "b/c"),
            ("data", "x y"),
            ("private", ""),
        ];
        let got: Vec<(&str, &str)> = got.iter().map(|(a, b)| (&a[..], &b[..])).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn refuses_invalid_utf8() {
        assert!(pairs(b"data=%FF%FE").is_err());
        assert!(pairs(b"data=\xff").is_err());
        assert!(pairs(b"data=a+\xff").is_err());
        assert!(pairs(b"data=%2B\xff").is_err());
    }

    #[test]
    fn text_without_escapes_comes_through_as_it_is() {
        let got = pairs("topic=jobs/1&data={\"é\":1}&x=a%2Bb+c".as_bytes()).unwrap();
        assert_eq!(got[1].1, "{\"é\":1}");
        assert_eq!(got[2].1, "a+b c");
    }
}
