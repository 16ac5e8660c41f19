//! The HTTP side of the fake API server: connections, requests, selectors, list pages and
//! watch streams.

use super::{meta, Failure, Request, Resource, Shared, Signal};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

pub(super) fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let generation = shared.generation.load(Ordering::SeqCst);
    thread::spawn(move || {
        for stream in listener.incoming() {
            if shared.generation.load(Ordering::SeqCst) != generation {
                break;
            }
            let Ok(stream) = stream else { continue };
            if let Ok(c) = stream.try_clone() {
                shared
                    .open
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(c);
            }
            let s = Arc::clone(&shared);
            thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                match &s.tls {
                    None => serve(stream, &s, generation),
                    // A failed handshake (e.g. the client rejected the certificate) just closes.
                    Some(a) => {
                        if let Ok(tls) = a.accept(stream) {
                            serve(tls, &s, generation);
                        }
                    }
                }
            });
        }
    });
}

fn read_request<S: Read>(r: &mut BufReader<S>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    Some(Request {
        method,
        path: path.to_owned(),
        query: query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect(),
        headers,
    })
}

/// Form decoding: `+` is a space, `%XX` a byte.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(v)) => {
                out.push(v);
                i += 2;
            }
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_body(code: u16, reason: &str, message: &str) -> String {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
    .to_string()
}

fn respond<W: Write>(w: &mut W, code: u16, body: &str) -> std::io::Result<()> {
    let reason = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    write!(
        w,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

fn serve<S: Read + Write>(stream: S, sh: &Shared, generation: u64) {
    let mut r = BufReader::new(stream);
    while let Some(req) = read_request(&mut r) {
        let w = r.get_mut();
        if sh.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        let (failure, token) = {
            let mut s = sh.lock();
            s.requests.push(req.clone());
            (s.failure.clone(), s.token.clone())
        };
        let auth_ok = req.headers.get("authorization") == Some(&format!("Bearer {token}"));
        let res = Resource::from_path(&req.path);
        let ok = match (auth_ok, &failure, res) {
            (false, _, _) => respond(w, 401, &status_body(401, "Unauthorized", "Unauthorized")),
            (_, Failure::Status(c), _) => respond(
                w,
                *c,
                &status_body(*c, "InternalError", "failing on purpose"),
            ),
            (_, Failure::Hang, _) => {
                sh.hanging.fetch_add(1, Ordering::SeqCst);
                while sh.lock().failure == Failure::Hang
                    && sh.generation.load(Ordering::SeqCst) == generation
                {
                    thread::sleep(Duration::from_millis(10));
                }
                sh.hanging.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            (_, _, None) => respond(
                w,
                404,
                &status_body(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            ),
            (_, Failure::Garbage, Some(_)) if req.is_watch() => {
                let _ = write_watch_head(w).and_then(|_| write_chunk(w, b"}{ not json\n"));
                let _ = w.write_all(b"0\r\n\r\n");
                return;
            }
            (_, Failure::Garbage, Some(_)) => {
                respond(w, 200, "{\"kind\": \"EndpointsList\", \"items\": [tru")
            }
            (_, Failure::None, Some(res)) if req.is_watch() => {
                watch(w, sh, generation, res, &req);
                return;
            }
            (_, Failure::None, Some(res)) => match list(sh, res, &req) {
                Ok(body) => respond(w, 200, &body),
                Err((code, msg)) => respond(w, code, &status_body(code, "BadRequest", &msg)),
            },
        };
        if ok.is_err() {
            return;
        }
    }
}

/// Label and field selectors of a request.
struct Selectors {
    labels: Vec<(String, &'static str, String)>,
    fields: Vec<(String, &'static str, String)>,
}

fn terms(s: &str, bare: bool) -> Result<Vec<(String, &'static str, String)>, String> {
    s.split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            let t = t.trim();
            for op in ["!=", "==", "="] {
                if let Some((k, v)) = t.split_once(op) {
                    let op = if op == "!=" { "!=" } else { "=" };
                    return Ok((k.trim().to_owned(), op, v.trim().to_owned()));
                }
            }
            match t.strip_prefix('!') {
                Some(k) if bare => Ok((k.to_owned(), "!", String::new())),
                None if bare => Ok((t.to_owned(), "exists", String::new())),
                _ => Err(format!("unsupported selector term {t:?}")),
            }
        })
        .collect()
}

impl Selectors {
    fn of(req: &Request) -> Result<Selectors, String> {
        let fields = terms(req.param("fieldSelector").unwrap_or(""), false)?;
        for (k, _, _) in &fields {
            if k != "metadata.namespace" && k != "metadata.name" {
                return Err(format!("field label not supported: {k}"));
            }
        }
        Ok(Selectors {
            labels: terms(req.param("labelSelector").unwrap_or(""), true)?,
            fields,
        })
    }

    fn admits(&self, o: &Value) -> bool {
        let labels = o.get("metadata").and_then(|m| m.get("labels"));
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|(k, op, v)| match *op {
            "=" => label(k) == Some(v.as_str()),
            "!=" => label(k) != Some(v.as_str()),
            "!" => label(k).is_none(),
            _ => label(k).is_some(),
        });
        let fields_ok = self.fields.iter().all(|(k, op, v)| {
            let actual = meta(o, k.trim_start_matches("metadata."));
            (actual == *v) == (*op == "=")
        });
        labels_ok && fields_ok
    }
}

fn list(sh: &Shared, res: Resource, req: &Request) -> Result<String, (u16, String)> {
    let sel = Selectors::of(req).map_err(|e| (400, e))?;
    let mut s = sh.lock();
    let limit = req
        .param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX)
        .min(s.page_size.unwrap_or(usize::MAX));
    let (snap, offset) = match req.param("continue") {
        Some(c) => {
            let (id, off) = c
                .split_once('-')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<usize>().ok()?)))
                .ok_or((400, format!("invalid continue token {c:?}")))?;
            if !s.snapshots.contains_key(&id) {
                return Err((410, "the provided continue parameter is too old".into()));
            }
            (id, off)
        }
        None => {
            let items: Vec<Value> = s
                .objects
                .iter()
                .filter(|((r, _, _), o)| *r == res && sel.admits(o))
                .map(|(_, o)| o.clone())
                .collect();
            let id = s.snapshots.len() as u64 + 1;
            let rv = s.rv;
            s.snapshots.insert(id, (rv, items));
            (id, 0)
        }
    };
    let (rv, items) = s.snapshots.get(&snap).cloned().unwrap_or_default();
    let page: Vec<Value> = items.iter().skip(offset).take(limit).cloned().collect();
    let next = offset + page.len();
    let (kind, api) = res.list_kind();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if next < items.len() {
        metadata["continue"] = json!(format!("{snap}-{next}"));
    }
    Ok(json!({"kind": kind, "apiVersion": api, "metadata": metadata, "items": page}).to_string())
}

fn write_watch_head<W: Write>(w: &mut W) -> std::io::Result<()> {
    w.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    w.flush()
}

fn write_chunk<W: Write>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    write!(w, "{:x}\r\n", data.len())?;
    w.write_all(data)?;
    w.write_all(b"\r\n")?;
    w.flush()
}

fn event_line(ty: &str, object: &Value) -> Vec<u8> {
    let mut l = json!({"type": ty, "object": object})
        .to_string()
        .into_bytes();
    l.push(b'\n');
    l
}

fn expired_line(rv: u64, current: u64) -> Vec<u8> {
    let status: Value = serde_json::from_str(&status_body(
        410,
        "Expired",
        &format!("too old resource version: {rv} ({current})"),
    ))
    .unwrap_or(Value::Null);
    event_line("ERROR", &status)
}

/// Serve one watch until it ends (close, expire, garbage, stop or a write error).
fn watch<W: Write>(w: &mut W, sh: &Shared, generation: u64, res: Resource, req: &Request) {
    let Ok(sel) = Selectors::of(req) else {
        let _ = respond(w, 400, &status_body(400, "BadRequest", "bad selector"));
        return;
    };
    let from: u64 = req
        .param("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (replay, mut cursor, compacted, current) = {
        let s = sh.lock();
        let replay: Vec<Vec<u8>> = s
            .history
            .iter()
            .filter(|(rv, r, _, o)| *rv > from && *r == res && sel.admits(o))
            .map(|(_, _, ty, o)| event_line(ty, o))
            .collect();
        (replay, s.signals.len(), s.compacted, s.rv)
    };
    if write_watch_head(w).is_err() {
        return;
    }
    if from != 0 && from < compacted {
        let _ = write_chunk(w, &expired_line(from, current));
        let _ = w.write_all(b"0\r\n\r\n");
        return;
    }
    sh.watches.fetch_add(1, Ordering::SeqCst);
    let mut out = replay.concat();
    loop {
        let split = sh.lock().split;
        let sent = if split {
            out.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .try_for_each(|l| {
                    let (a, b) = l.split_at(l.len() / 2);
                    write_chunk(w, a)?;
                    thread::sleep(Duration::from_millis(5));
                    write_chunk(w, &[b, b"\n"].concat())
                })
        } else {
            write_chunk(w, &out)
        };
        out.clear();
        if sent.is_err() {
            break;
        }
        let mut s = sh.lock();
        while s.signals.len() == cursor && sh.generation.load(Ordering::SeqCst) == generation {
            s = sh
                .changed
                .wait_timeout(s, Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        if sh.generation.load(Ordering::SeqCst) != generation {
            break;
        }
        let mut end = false;
        for sig in &s.signals[cursor..] {
            match sig {
                Signal::Event(r, ty, o) if *r == res && sel.admits(o) => {
                    out.extend(event_line(ty, o))
                }
                Signal::Event(..) => {}
                Signal::Bookmark => {
                    let (kind, api) = res.kind();
                    out.extend(event_line(
                        "BOOKMARK",
                        &json!({"kind": kind, "apiVersion": api,
                                "metadata": {"resourceVersion": s.rv.to_string()}}),
                    ));
                }
                Signal::Expire => {
                    out.extend(expired_line(from, s.rv));
                    end = true;
                }
                Signal::Garbage => {
                    out.extend_from_slice(b"{\"type\": \"ADDED\", \"object\": garbage\n");
                    end = true;
                }
                Signal::Close => end = true,
            }
            if end {
                break;
            }
        }
        cursor = s.signals.len();
        drop(s);
        if end {
            let _ = write_chunk(w, &out);
            let _ = w.write_all(b"0\r\n\r\n");
            let _ = w.flush();
            break;
        }
    }
    sh.watches.fetch_sub(1, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_form_values() {
        assert_eq!(decode("a%3Db%2Cc+d"), "a=b,c d");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }
}
