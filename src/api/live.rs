//! JSON serialized once per configuration, with holes for what changes between requests: the
//! `serverStatus` of load balancers whose servers a health check watches. A request copies
//! the stored bytes around the servers' health as it is then; a document without holes is
//! served as stored, without a copy.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

/// Whether one server is up, read each time the API shows it.
pub type ServerUp = Arc<dyn Fn() -> bool + Send + Sync>;

/// One load balancer's `serverStatus`: each server (URL or address, JSON-encoded, sorted)
/// with the flag that says whether it is up; a server without a flag is always up.
pub(super) struct LiveServers(Vec<(Vec<u8>, Option<ServerUp>)>);

impl LiveServers {
    pub fn new(servers: BTreeMap<&str, Option<ServerUp>>) -> LiveServers {
        let encoded = servers
            .into_iter()
            .map(|(server, up)| (encode_str(server), up))
            .collect();
        LiveServers(encoded)
    }

    fn write(&self, out: &mut BytesMut) {
        out.put_u8(b'{');
        for (i, (server, up)) in self.0.iter().enumerate() {
            if i > 0 {
                out.put_u8(b',');
            }
            out.put_slice(server);
            let up = up.as_ref().is_none_or(|up| up());
            out.put_slice(if up { b":\"UP\"" } else { b":\"DOWN\"" });
        }
        out.put_u8(b'}');
    }

    /// An upper bound of the written length.
    fn len_hint(&self) -> usize {
        2 + self.0.iter().map(|(s, _)| s.len() + 8).sum::<usize>()
    }
}

enum Part {
    Stored(Bytes),
    Servers(Arc<LiveServers>),
}

/// A JSON document, possibly with live `serverStatus` values in it.
pub(super) struct LiveJson(Vec<Part>);

impl LiveJson {
    pub fn stored(bytes: Bytes) -> LiveJson {
        LiveJson(vec![Part::Stored(bytes)])
    }

    /// The serialized JSON object `object` with `"serverStatus": servers` added as its last
    /// member.
    pub fn object_with_servers(object: &[u8], servers: Arc<LiveServers>) -> LiveJson {
        let mut json = LiveJsonBuilder::default();
        match object {
            [head @ .., b'}'] => {
                json.push(head);
                if head != b"{" {
                    json.push(b",");
                }
            }
            // Not an object: `serde_json` always gives one for a map; keep the JSON valid.
            _ => json.push(b"{"),
        }
        json.push(b"\"serverStatus\":");
        json.push_servers(servers);
        json.push(b"}");
        json.finish()
    }

    /// The document with the servers' health as it is now.
    pub fn render(&self) -> Bytes {
        if let [Part::Stored(bytes)] = self.0.as_slice() {
            return bytes.clone();
        }
        let mut out = BytesMut::with_capacity(self.len_hint());
        self.write(&mut out);
        out.freeze()
    }

    pub fn write(&self, out: &mut BytesMut) {
        for part in &self.0 {
            match part {
                Part::Stored(bytes) => out.put_slice(bytes),
                Part::Servers(servers) => servers.write(out),
            }
        }
    }

    /// An upper bound of the rendered length.
    pub fn len_hint(&self) -> usize {
        self.0
            .iter()
            .map(|part| match part {
                Part::Stored(bytes) => bytes.len(),
                Part::Servers(servers) => servers.len_hint(),
            })
            .sum()
    }
}

/// Writes a [`LiveJson`] from stored bytes and live parts.
#[derive(Default)]
pub(super) struct LiveJsonBuilder {
    parts: Vec<Part>,
    pending: Vec<u8>,
}

impl LiveJsonBuilder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// `text` as a JSON string.
    pub fn push_str(&mut self, text: &str) {
        self.pending.extend_from_slice(&encode_str(text));
    }

    pub fn push_json(&mut self, json: &LiveJson) {
        for part in &json.0 {
            match part {
                Part::Stored(bytes) => self.push(bytes),
                Part::Servers(servers) => self.push_servers(servers.clone()),
            }
        }
    }

    fn push_servers(&mut self, servers: Arc<LiveServers>) {
        self.flush();
        self.parts.push(Part::Servers(servers));
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let bytes = Bytes::from(std::mem::take(&mut self.pending));
            self.parts.push(Part::Stored(bytes));
        }
    }

    pub fn finish(mut self) -> LiveJson {
        self.flush();
        LiveJson(self.parts)
    }
}

fn encode_str(text: &str) -> Vec<u8> {
    // Serializing a string cannot fail.
    serde_json::to_vec(text).unwrap_or_else(|_| b"\"\"".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::sync::atomic::{AtomicBool, Ordering};

    fn parse(json: &LiveJson) -> Value {
        serde_json::from_slice(&json.render()).unwrap()
    }

    #[test]
    fn server_status_is_read_at_each_render() {
        let flag = Arc::new(AtomicBool::new(true));
        let up: ServerUp = {
            let flag = flag.clone();
            Arc::new(move || flag.load(Ordering::Relaxed))
        };
        let servers = LiveServers::new(BTreeMap::from([
            ("http://b\"q", Some(up)),
            ("http://a", None),
        ]));
        let json = LiveJson::object_with_servers(br#"{"status":"enabled"}"#, Arc::new(servers));
        assert_eq!(
            parse(&json),
            json!({"status": "enabled", "serverStatus": {"http://a": "UP", "http://b\"q": "UP"}})
        );
        flag.store(false, Ordering::Relaxed);
        assert_eq!(parse(&json)["serverStatus"]["http://b\"q"], json!("DOWN"));
        assert!(json.len_hint() >= json.render().len());
    }

    #[test]
    fn live_documents_nest_and_stored_ones_are_served_as_stored() {
        let up: ServerUp = Arc::new(|| false);
        let servers = LiveServers::new(BTreeMap::from([("10.0.0.1:5432", Some(up))]));
        let object = LiveJson::object_with_servers(b"{}", Arc::new(servers));
        let mut outer = LiveJsonBuilder::default();
        outer.push(b"{");
        outer.push_str("pg@file");
        outer.push(b":");
        outer.push_json(&object);
        outer.push(b"}");
        assert_eq!(
            parse(&outer.finish()),
            json!({"pg@file": {"serverStatus": {"10.0.0.1:5432": "DOWN"}}})
        );
        let stored = LiveJson::stored(Bytes::from_static(b"[1]"));
        assert_eq!(stored.render(), Bytes::from_static(b"[1]"));
    }
}
