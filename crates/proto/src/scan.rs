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

#[cfg(test)]
mod tests {
    use super::member_span;

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
    fn nested_data_key_is_not_top_level() {
        let s = r#"{"x":{"data":1},"data":{"y":2}}"#;
        assert_eq!(get(s, "data"), Some(r#"{"y":2}"#));
    }
}
