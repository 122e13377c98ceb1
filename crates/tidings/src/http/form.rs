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
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    let bytes: Vec<u8> = percent_decode(&plus_as_space).collect();
    String::from_utf8(bytes).map_err(|_| ApiError::bad("form data is not valid UTF-8"))
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
    }
}
