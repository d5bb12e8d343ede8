//! Finds the raw bytes of a top-level member of a JSON object. The input must
//! already have been validated as JSON (simd-json does that first), so the
//! scanner only tracks strings and nesting.

use std::ops::Range;

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// `i` at the opening quote; returns the index after the closing quote.
fn skip_string(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

fn skip_value(b: &[u8], mut i: usize) -> usize {
    match b.get(i) {
        Some(b'"') => skip_string(b, i),
        Some(b'{') | Some(b'[') => {
            let mut depth = 0usize;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        i = skip_string(b, i);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            i
        }
        _ => {
            while i < b.len() && !matches!(b[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                i += 1;
            }
            i
        }
    }
}

/// Compares a raw JSON string body (no quotes) with `key`, honouring escapes.
fn key_eq(raw: &[u8], key: &str) -> bool {
    if !raw.contains(&b'\\') {
        return raw == key.as_bytes();
    }
    // Rare: an escaped key. Decode through serde-free simd-json on a copy.
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    match simd_json::to_borrowed_value(&mut quoted) {
        Ok(simd_json::BorrowedValue::String(s)) => s == key,
        _ => false,
    }
}

/// The byte range of the value of the last top-level member named `key`.
pub(crate) fn member_span(b: &[u8], key: &str) -> Option<Range<usize>> {
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut found = None;
    loop {
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b'"') => {}
            _ => return found,
        }
        let kstart = i + 1;
        i = skip_string(b, i);
        let kend = i.saturating_sub(1);
        i = skip_ws(b, i);
        if b.get(i) != Some(&b':') {
            return found;
        }
        i = skip_ws(b, i + 1);
        let vstart = i;
        i = skip_value(b, i);
        if key_eq(&b[kstart..kend], key) {
            found = Some(vstart..i);
        }
        i = skip_ws(b, i);
        if b.get(i) == Some(&b',') {
            i += 1;
        }
    }
}

/// Whether the arrays and objects of `b` nest at most `max` deep (brackets
/// inside strings do not count). One pass, no stack: it runs before
/// simd-json, which builds and drops values recursively (a message of 30,000
/// nested arrays overflowed the stack, and that aborts the process).
pub fn depth_within(b: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = 0;
    while i < b.len() {
        match (in_string, b[i]) {
            (true, b'\\') => i += 1,
            (true, b'"') => in_string = false,
            (true, _) => {}
            (false, b'"') => in_string = true,
            (false, b'[' | b'{') => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            (false, b']' | b'}') => depth = depth.saturating_sub(1),
            (false, _) => {}
        }
        i += 1;
    }
    true
}

/// Whether every token of `b` other than structure (strings, numbers,
/// `true`, `false`, `null`) is well-formed JSON and ends at a delimiter.
///
/// simd-json 0.15 (and 0.17) accepts text that is not JSON in its slow paths:
/// a long number running into other characters (`6000000000000000000x`,
/// `6210000000000000000000007-5`, `95111112.51111111109.5`) and a literal
/// followed by NULs (`false\0`). A publisher's `data` goes to every
/// subscriber byte for byte, so it gets this strict second look; nesting and
/// separators were checked by simd-json. Found by the cargo-afl target in
/// `fuzz/` (docs/security.md).
pub(crate) fn tokens_strict(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        let end = match b[i] {
            b' ' | b'\t' | b'\n' | b'\r' | b'{' | b'}' | b'[' | b']' | b',' | b':' => {
                i += 1;
                continue;
            }
            b'"' => string_end(b, i),
            b't' => literal_end(b, i, b"true"),
            b'f' => literal_end(b, i, b"false"),
            b'n' => literal_end(b, i, b"null"),
            b'-' | b'0'..=b'9' => number_end(b, i),
            _ => None,
        };
        let Some(end) = end else {
            return false;
        };
        // A value ends at whitespace, a separator, a closing bracket, or the end.
        if !matches!(
            b.get(end),
            None | Some(b' ' | b'\t' | b'\n' | b'\r' | b',' | b':' | b'}' | b']')
        ) {
            return false;
        }
        i = end;
    }
    true
}

/// `i` at the opening quote: the index after the closing quote, if the
/// string has only valid escapes and no raw control characters.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        match *b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => match *b.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' => {
                    let hex = b.get(i + 2..i + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    i += 6;
                }
                _ => return None,
            },
            0..=0x1f => return None,
            _ => i += 1,
        }
    }
}

fn literal_end(b: &[u8], i: usize, lit: &[u8]) -> Option<usize> {
    b[i..].starts_with(lit).then_some(i + lit.len())
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` from `i`.
pub(crate) fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(b, i)?,
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::{depth_within, member_span, tokens_strict};

    #[test]
    fn strict_tokens_catch_what_simd_json_lets_through() {
        for ok in [
            r#"{"a":1,"b":-2.5e+3,"c":[6000000000000000000000,0,-0.0,1E5],"d":"1x\"2\u00e9\n"}"#,
            "{\"a\" : 60000000000000000000 ,\n\"b\":\t[true,false,null]}",
            "{}",
        ] {
            assert!(tokens_strict(ok.as_bytes()), "{ok}");
        }
        for bad in [
            r#"{"a":6000000000000000000x}"#,
            r#"{"a":60000000000000000000\"}"#,
            r#"{"a":6210000000000000000000007-5}"#,
            r#"{"a":95111112.51111111109.5}"#,
            r#"{"a":64011111111111111111111111+112E5}"#,
            "{\"a\":false\0}",
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":"\x"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":"\u12"}"#,
            r#"{"a":tru}"#,
        ] {
            assert!(!tokens_strict(bad.as_bytes()), "{bad:?}");
        }
    }

    fn get<'a>(s: &'a str, k: &str) -> Option<&'a str> {
        member_span(s.as_bytes(), k).map(|r| &s[r])
    }

    #[test]
    fn finds_nested_objects_byte_for_byte() {
        let s = r#"{"op":"publish","topic":"a.b","data":{"p":64012.50000,"s":"}\"{","n":[1,{"x":2}]},"id":3}"#;
        assert_eq!(
            get(s, "data"),
            Some(r#"{"p":64012.50000,"s":"}\"{","n":[1,{"x":2}]}"#)
        );
        assert_eq!(get(s, "id"), Some("3"));
        assert_eq!(get(s, "topic"), Some(r#""a.b""#));
        assert_eq!(get(s, "nope"), None);
    }

    #[test]
    fn whitespace_and_escaped_keys() {
        let s = "{ \"d\\u0061ta\" :\n { \"a\" : 1 } , \"x\":true }";
        assert_eq!(get(s, "data"), Some("{ \"a\" : 1 }"));
        assert_eq!(get(s, "x"), Some("true"));
    }

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert!(depth_within(br#"{"a":[[1]]}"#, 3));
        assert!(!depth_within(br#"{"a":[[1]]}"#, 2));
        // Brackets in strings, escaped quotes included, do not count.
        assert!(depth_within(br#"{"a":"[[[\"[[[","b":1}"#, 1));
        assert!(!depth_within(&[b'['; 30_000], 128));
    }

    #[test]
    fn nested_data_key_is_not_top_level() {
        let s = r#"{"x":{"data":1},"data":{"y":2}}"#;
        assert_eq!(get(s, "data"), Some(r#"{"y":2}"#));
    }
}
