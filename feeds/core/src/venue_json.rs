//! Reading fields of venue messages parsed with simd-json, for adapters.
//!
//! Venues send numbers as strings (`"64012.50"`) to keep their digits; some
//! send plain JSON numbers. Both become a [`Num`], the string keeping its
//! text exactly.

use simd_json::prelude::*;
use simd_json::{BorrowedValue, StaticNode};

use crate::tick::Num;
use crate::ws::Malformed;

/// Parses a venue message in place (simd-json rewrites `msg`).
///
/// # Errors
/// [`Malformed`] when `msg` is not JSON, not an object, or nested deeper
/// than [`tickwire_proto::MAX_JSON_DEPTH`] (simd-json builds and drops
/// values recursively: a message of 30,000 nested arrays would overflow the
/// stack and abort the broker).
pub fn parse_object(msg: &mut [u8]) -> Result<BorrowedValue<'_>, Malformed> {
    if !tickwire_proto::json_depth_within(msg, tickwire_proto::MAX_JSON_DEPTH) {
        return Err(Malformed("JSON nested too deep"));
    }
    let v = simd_json::to_borrowed_value(msg).map_err(|_| Malformed("not JSON"))?;
    if !v.is_object() {
        return Err(Malformed("not a JSON object"));
    }
    Ok(v)
}

/// Field `key` as a number: `None` when absent, `null` or `""`.
///
/// # Errors
/// `bad` when the field is there but is not a number or a numeric string.
pub fn num(v: &BorrowedValue<'_>, key: &str, bad: &'static str) -> Result<Option<Num>, Malformed> {
    let Some(f) = v.get(key) else {
        return Ok(None);
    };
    match f {
        BorrowedValue::String(s) if s.is_empty() => Ok(None),
        BorrowedValue::String(s) => Num::parse(s).map(Some).map_err(|_| Malformed(bad)),
        BorrowedValue::Static(StaticNode::Null) => Ok(None),
        BorrowedValue::Static(StaticNode::U64(n)) => Ok(Some(Num::from_u64(*n))),
        BorrowedValue::Static(StaticNode::I64(n)) => {
            let text = n.to_string();
            Num::parse(&text).map(Some).map_err(|_| Malformed(bad))
        }
        BorrowedValue::Static(StaticNode::F64(x)) => {
            Num::from_f64(*x).map(Some).map_err(|_| Malformed(bad))
        }
        _ => Err(Malformed(bad)),
    }
}

/// Field `key` as a number that must be there.
///
/// # Errors
/// `bad` when absent, empty or not a number.
pub fn req_num(v: &BorrowedValue<'_>, key: &str, bad: &'static str) -> Result<Num, Malformed> {
    num(v, key, bad)?.ok_or(Malformed(bad))
}

/// Field `key` as a whole number (`123` or `"123"`): `None` when absent or `null`.
///
/// # Errors
/// `bad` when the field is something else.
pub fn uint(v: &BorrowedValue<'_>, key: &str, bad: &'static str) -> Result<Option<u64>, Malformed> {
    match v.get(key) {
        None | Some(BorrowedValue::Static(StaticNode::Null)) => Ok(None),
        Some(BorrowedValue::String(s)) => s.parse().map(Some).map_err(|_| Malformed(bad)),
        Some(f) => f.as_u64().map(Some).ok_or(Malformed(bad)),
    }
}

/// Field `key` as a string: `None` when absent.
///
/// # Errors
/// `bad` when the field is not a string.
pub fn str_field<'v>(
    v: &'v BorrowedValue<'_>,
    key: &str,
    bad: &'static str,
) -> Result<Option<&'v str>, Malformed> {
    match v.get(key) {
        None => Ok(None),
        Some(f) => f.as_str().map(Some).ok_or(Malformed(bad)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_come_from_strings_or_json_numbers() {
        let mut msg = br#"{"s":"64012.50","n":42,"neg":-3,"f":0.25,"e":"","z":null,"bad":"abc","arr":[1],"t":"17"}"#.to_vec();
        let v = parse_object(&mut msg).unwrap();
        let n = |k| num(&v, k, "bad").map(|o| o.map(|n| n.to_string()));
        assert_eq!(n("s"), Ok(Some("64012.50".into())));
        assert_eq!(n("n"), Ok(Some("42".into())));
        assert_eq!(n("neg"), Ok(Some("-3".into())));
        assert_eq!(n("f"), Ok(Some("0.25".into())));
        assert_eq!(n("e"), Ok(None));
        assert_eq!(n("z"), Ok(None));
        assert_eq!(n("missing"), Ok(None));
        assert_eq!(n("bad"), Err(Malformed("bad")));
        assert_eq!(n("arr"), Err(Malformed("bad")));
        assert_eq!(req_num(&v, "missing", "need"), Err(Malformed("need")));
        assert_eq!(uint(&v, "n", "x"), Ok(Some(42)));
        assert_eq!(uint(&v, "t", "x"), Ok(Some(17)));
        assert_eq!(uint(&v, "neg", "x"), Err(Malformed("x")));
        assert_eq!(uint(&v, "f", "x"), Err(Malformed("x")));
        assert_eq!(str_field(&v, "s", "x"), Ok(Some("64012.50")));
        assert_eq!(str_field(&v, "n", "x"), Err(Malformed("x")));
    }

    #[test]
    fn only_objects_are_messages() {
        assert_eq!(
            parse_object(&mut b"[1]".to_vec()).unwrap_err(),
            Malformed("not a JSON object")
        );
        assert_eq!(
            parse_object(&mut b"{\"a\":".to_vec()).unwrap_err(),
            Malformed("not JSON")
        );
        assert_eq!(
            parse_object(&mut b"".to_vec()).unwrap_err(),
            Malformed("not JSON")
        );
    }

    #[test]
    fn a_message_nested_past_the_limit_is_malformed_not_a_crash() {
        // Well-formed: 30,000 arrays, each closed, in an object.
        let mut deep = b"{\"a\":".to_vec();
        deep.extend([b'['; 30_000]);
        deep.extend([b']'; 30_000]);
        deep.push(b'}');
        assert_eq!(
            parse_object(&mut deep).unwrap_err(),
            Malformed("JSON nested too deep")
        );
        let mut ok = br#"{"a":[[[1]]]}"#.to_vec();
        assert!(parse_object(&mut ok).is_ok());
    }
}
