//! Reading recordings: NDJSON or CSV, into records ready to publish.
//!
//! NDJSON, one object per line, in either of two forms:
//! * flat: `{"ts":1764131520123,"topic":"crypto.BTC-USD","price":64012.50,"bid":64012.00}`:
//!   every member but `ts` and `topic` goes into the tick, in order, each
//!   value byte for byte;
//! * wrapped: `{"ts":..,"topic":..,"data":{...}}`: `data` is the tick, byte
//!   for byte, and other members are ignored. The broker's own `tick` frames
//!   (`{"type":"tick","topic":..,"seq":..,"ts":..,"data":{..}}`) are of this
//!   form, so a capture of a subscription replays as it is.
//!
//! CSV: a header line naming the columns, `ts` and `topic` among them; every
//! other column is a tick field. Empty cells are left out; cells that are
//! JSON numbers are written as numbers (digits kept), others as strings.
//!
//! `ts` is ms since the Unix epoch (any origin works: only differences
//! count). Blank lines are skipped.

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use tickwire_feed::Num;
use tickwire_proto::Topic;

/// One tick of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Time from the first record, in ms (never less than the record before).
    pub at_ms: u64,
    pub topic: Topic,
    /// The tick, a JSON object.
    pub data: Bytes,
}

/// A recording, read whole into memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recording {
    records: Vec<Record>,
}

/// Why a recording could not be read: a 1-based line and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Interns topics, so a recording of a few topics holds a few strings.
struct Topics<'a> {
    prefix: &'a str,
    known: HashMap<String, Topic>,
}

impl Topics<'_> {
    fn get(&mut self, name: &str) -> Result<Topic, String> {
        if let Some(t) = self.known.get(name) {
            return Ok(t.clone());
        }
        let full = if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        };
        let t = Topic::parse(&full).map_err(|e| format!("bad topic: {e}"))?;
        self.known.insert(name.to_owned(), t.clone());
        Ok(t)
    }
}

/// Turns absolute `ts` into offsets from the first, never going back.
#[derive(Default)]
struct Clock {
    first: Option<u64>,
    last_at: u64,
}

impl Clock {
    fn at(&mut self, ts: u64) -> u64 {
        let first = *self.first.get_or_insert(ts);
        self.last_at = self.last_at.max(ts.saturating_sub(first));
        self.last_at
    }
}

impl Recording {
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// From the first record to the last, in ms.
    pub fn duration_ms(&self) -> u64 {
        self.records.last().map_or(0, |r| r.at_ms)
    }

    /// Reads NDJSON; `prefix` (unless empty) is put before every topic.
    ///
    /// # Errors
    /// [`BadLine`] for the first line that is not a record.
    pub fn from_ndjson(text: &str, prefix: &str) -> Result<Recording, BadLine> {
        let mut topics = Topics {
            prefix,
            known: HashMap::new(),
        };
        let mut clock = Clock::default();
        let mut records = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason: String| BadLine {
                line: i + 1,
                reason,
            };
            let (ts, topic, data) = ndjson_record(line).map_err(bad)?;
            let topic = topics.get(&topic).map_err(bad)?;
            records.push(Record {
                at_ms: clock.at(ts),
                topic,
                data: Bytes::from(data),
            });
        }
        Ok(Recording { records })
    }

    /// Reads CSV with a header line; `prefix` as for NDJSON.
    ///
    /// # Errors
    /// [`BadLine`] for a missing or bad header or the first bad row.
    pub fn from_csv(text: &str, prefix: &str) -> Result<Recording, BadLine> {
        let mut topics = Topics {
            prefix,
            known: HashMap::new(),
        };
        let mut clock = Clock::default();
        let mut records = Vec::new();
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((hline, header)) = lines.next() else {
            return Ok(Recording::default());
        };
        let columns: Vec<String> = split_csv(header).into_iter().map(str::to_owned).collect();
        let find = |name: &str| columns.iter().position(|c| c == name);
        let (Some(ts_col), Some(topic_col)) = (find("ts"), find("topic")) else {
            return Err(BadLine {
                line: hline + 1,
                reason: format!("the header must name `ts` and `topic` columns, got {columns:?}"),
            });
        };
        for (i, line) in lines {
            let bad = |reason: String| BadLine {
                line: i + 1,
                reason,
            };
            let cells = split_csv(line);
            if cells.len() != columns.len() {
                return Err(bad(format!(
                    "{} cells, the header has {} columns",
                    cells.len(),
                    columns.len()
                )));
            }
            let ts = parse_ts(cells[ts_col]).map_err(bad)?;
            let topic = topics.get(cells[topic_col]).map_err(bad)?;
            let mut data = String::with_capacity(line.len() + 32);
            data.push('{');
            for (c, (name, cell)) in columns.iter().zip(&cells).enumerate() {
                if c == ts_col || c == topic_col || cell.is_empty() {
                    continue;
                }
                if data.len() > 1 {
                    data.push(',');
                }
                tickwire_proto::encode::push_json_str(&mut data, name);
                data.push(':');
                if Num::parse(cell).is_ok() {
                    data.push_str(cell);
                } else {
                    tickwire_proto::encode::push_json_str(&mut data, cell);
                }
            }
            data.push('}');
            if data.len() == 2 {
                return Err(bad("no tick fields in this row".to_owned()));
            }
            records.push(Record {
                at_ms: clock.at(ts),
                topic,
                data: Bytes::from(data),
            });
        }
        Ok(Recording { records })
    }
}

/// Cells of one CSV line, trimmed, with surrounding double quotes removed.
/// Recordings hold numbers and topics, so quoted commas are not supported.
fn split_csv(line: &str) -> Vec<&str> {
    line.split(',')
        .map(|c| {
            let c = c.trim();
            c.strip_prefix('"')
                .and_then(|c| c.strip_suffix('"'))
                .unwrap_or(c)
        })
        .collect()
}

fn parse_ts(text: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .map_err(|_| format!("`ts` must be a whole number of ms, got '{text}'"))
}

/// `ts`, topic and the tick's JSON from one NDJSON line.
fn ndjson_record(line: &str) -> Result<(u64, String, String), String> {
    let Members(members) =
        serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    let get = |name: &str| members.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let ts = get("ts").ok_or("missing `ts`")?;
    let ts = parse_ts(ts.get())?;
    let topic = get("topic").ok_or("missing `topic`")?;
    let topic: String =
        serde_json::from_str(topic.get()).map_err(|_| "`topic` must be a string".to_owned())?;
    if let Some(data) = get("data") {
        if !data.get().starts_with('{') {
            return Err("`data` must be a JSON object".to_owned());
        }
        return Ok((ts, topic, data.get().to_owned()));
    }
    let mut data = String::with_capacity(line.len());
    data.push('{');
    for (k, v) in members.iter().filter(|(k, _)| k != "ts" && k != "topic") {
        if data.len() > 1 {
            data.push(',');
        }
        tickwire_proto::encode::push_json_str(&mut data, k);
        data.push(':');
        data.push_str(v.get());
    }
    data.push('}');
    if data.len() == 2 {
        return Err("no tick fields besides `ts` and `topic`".to_owned());
    }
    Ok((ts, topic, data))
}

/// An object's members in order, values as raw JSON text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datas(r: &Recording) -> Vec<(&str, u64, &str)> {
        r.records()
            .iter()
            .map(|r| {
                (
                    r.topic.as_str(),
                    r.at_ms,
                    std::str::from_utf8(&r.data).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn flat_ndjson_keeps_fields_in_order_byte_for_byte() {
        let text = r#"
{"ts":1000,"topic":"crypto.BTC-USD","price":64012.50,"bid":64012.00,"note":"x"}

{"topic":"fx.EUR-USD","ts":1250,"bid":1.08001,"ask":1.08003}
"#;
        let r = Recording::from_ndjson(text, "").unwrap();
        assert_eq!(
            datas(&r),
            [
                (
                    "crypto.BTC-USD",
                    0,
                    r#"{"price":64012.50,"bid":64012.00,"note":"x"}"#
                ),
                ("fx.EUR-USD", 250, r#"{"bid":1.08001,"ask":1.08003}"#),
            ]
        );
        assert_eq!(r.duration_ms(), 250);
    }

    #[test]
    fn wrapped_ndjson_and_broker_tick_frames_pass_data_through() {
        let text = concat!(
            r#"{"ts":5,"topic":"a.b","data":{"price": 1.10 ,"x":[1,2]}}"#,
            "\n",
            r#"{"type":"tick","topic":"a.b","seq":9,"ts":7,"data":{"price":1.20}}"#,
        );
        let r = Recording::from_ndjson(text, "replay").unwrap();
        assert_eq!(
            datas(&r),
            [
                ("replay.a.b", 0, r#"{"price": 1.10 ,"x":[1,2]}"#),
                ("replay.a.b", 2, r#"{"price":1.20}"#),
            ]
        );
    }

    #[test]
    fn time_never_goes_back() {
        let text = "{\"ts\":100,\"topic\":\"a\",\"p\":1}\n{\"ts\":300,\"topic\":\"a\",\"p\":2}\n{\"ts\":200,\"topic\":\"a\",\"p\":3}\n{\"ts\":50,\"topic\":\"a\",\"p\":4}";
        let r = Recording::from_ndjson(text, "").unwrap();
        let at: Vec<u64> = r.records().iter().map(|r| r.at_ms).collect();
        assert_eq!(at, [0, 200, 200, 200]);
    }

    #[test]
    fn bad_ndjson_lines_are_named() {
        let cases = [
            ("not json", "not a JSON object"),
            ("[1,2]", "not a JSON object"),
            (r#"{"topic":"a","p":1}"#, "missing `ts`"),
            (r#"{"ts":1,"p":1}"#, "missing `topic`"),
            (r#"{"ts":-1,"topic":"a","p":1}"#, "`ts`"),
            (r#"{"ts":1.5,"topic":"a","p":1}"#, "`ts`"),
            (r#"{"ts":1,"topic":7,"p":1}"#, "`topic` must be a string"),
            (r#"{"ts":1,"topic":"a..b","p":1}"#, "bad topic"),
            (r#"{"ts":1,"topic":"a.*","p":1}"#, "bad topic"),
            (
                r#"{"ts":1,"topic":"a","data":[1]}"#,
                "`data` must be a JSON object",
            ),
            (r#"{"ts":1,"topic":"a"}"#, "no tick fields"),
        ];
        for (line, want) in cases {
            let text = format!("{{\"ts\":1,\"topic\":\"ok\",\"p\":1}}\n{line}\n");
            let e = Recording::from_ndjson(&text, "").unwrap_err();
            assert_eq!(e.line, 2, "{line}");
            assert!(e.reason.contains(want), "{line}: {}", e.reason);
        }
    }

    #[test]
    fn csv_columns_become_fields_and_numbers_keep_their_digits() {
        let text = "ts,topic,price,bid,ask,bid_size,ask_size,volume,source_ts,venue\n\
                    1000,crypto.BTC-USD,64012.50,64012.00,64013.00,0.5,,12000.1,999,\"cb\"\n\
                    \n\
                    1100, \"fx.EUR-USD\" ,1.08000,,,,,,,\n";
        let r = Recording::from_csv(text, "").unwrap();
        assert_eq!(
            datas(&r),
            [
                (
                    "crypto.BTC-USD",
                    0,
                    r#"{"price":64012.50,"bid":64012.00,"ask":64013.00,"bid_size":0.5,"volume":12000.1,"source_ts":999,"venue":"cb"}"#
                ),
                ("fx.EUR-USD", 100, r#"{"price":1.08000}"#),
            ]
        );
    }

    #[test]
    fn bad_csv_is_named_by_line() {
        let e = Recording::from_csv("time,topic,price\n1,a,1\n", "").unwrap_err();
        assert_eq!(e.line, 1);
        let e = Recording::from_csv("ts,topic,price\n1,a,1\n2,a\n", "").unwrap_err();
        assert_eq!((e.line, e.reason.contains("cells")), (3, true));
        let e = Recording::from_csv("ts,topic,price\nx,a,1\n", "").unwrap_err();
        assert_eq!(e.line, 2);
        let e = Recording::from_csv("ts,topic,price\n1,a,\n", "").unwrap_err();
        assert!(e.reason.contains("no tick fields"));
        assert!(Recording::from_csv("", "").unwrap().is_empty());
    }
}
