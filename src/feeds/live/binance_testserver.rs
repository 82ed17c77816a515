//! Offline stand-ins for Binance: a reader for hftbacktest's raw captures and a local
//! HTTP server answering the REST depth request with the capture's own snapshot.
//!
//! Owns the capture line format (`<local_ns> <json>`, gzip) and the REST side only; the
//! websocket side is [`super::testserver::ReplayServer`], fed with the capture's stream
//! lines byte for byte. Never interprets the JSON beyond telling the one REST snapshot
//! line (`{"lastUpdateId":...}`) from the websocket lines.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::event::UnixNanos;

/// A raw Binance capture split into what the websocket delivered and the REST snapshot.
#[derive(Clone, Debug, Default)]
pub struct BinanceCapture {
    /// Websocket messages (combined-stream envelopes), with the local receive time.
    pub stream: Vec<(UnixNanos, String)>,
    /// The REST depth response line, if the capture holds one.
    pub snapshot: Option<String>,
}

/// Reads a gzip capture of `<local_ns> <json>` lines.
pub fn read_binance_capture(path: &Path) -> anyhow::Result<BinanceCapture> {
    use anyhow::Context;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open Binance capture {}", path.display()))?;
    let reader = BufReader::new(flate2::read::MultiGzDecoder::new(file));
    let mut capture = BinanceCapture::default();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        let (ts, json) = line.split_once(' ').with_context(|| {
            format!("{} line {}: not `<local_ns> <json>`", path.display(), i + 1)
        })?;
        let ts: UnixNanos = ts
            .parse()
            .with_context(|| format!("{} line {}: bad timestamp {ts:?}", path.display(), i + 1))?;
        if json.starts_with("{\"lastUpdateId\"") {
            capture.snapshot = Some(json.to_string());
        } else {
            capture.stream.push((ts, json.to_string()));
        }
    }
    Ok(capture)
}

/// How the snapshot server frames its answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length`.
    #[default]
    Length,
    /// `Transfer-Encoding: chunked`, in pieces of a few KB (as CDNs often answer).
    Chunked,
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<String>>,
}

/// A local HTTP/1.1 server answering every `GET` whose path contains `/depth` with a
/// fixed body (status 200), anything else with 404. Dropping it stops the thread.
pub struct SnapshotServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl SnapshotServer {
    /// Binds `127.0.0.1:0` and serves `body`.
    pub fn start(body: String, framing: Framing) -> io::Result<SnapshotServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(State::default());
        let thread = {
            let (stop, state) = (stop.clone(), state.clone());
            std::thread::Builder::new()
                .name("rest-snapshot-server".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                // A failing client only ends its own request.
                                let _ = answer(stream, &body, framing, &state);
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })?
        };
        Ok(SnapshotServer {
            addr,
            stop,
            state,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request target of every request so far (`/api/v3/depth?symbol=...`).
    pub fn requests(&self) -> Vec<String> {
        self.state
            .requests
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
}

impl Drop for SnapshotServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(stream: TcpStream, body: &str, framing: Framing, state: &State) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim_end().is_empty() {
            break;
        }
    }
    if let Ok(mut v) = state.requests.lock() {
        v.push(target.clone());
    }
    let mut out = stream;
    if !target.contains("/depth") {
        let msg = r#"{"code":-1,"msg":"not found"}"#;
        write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
            msg.len()
        )?;
        return out.flush();
    }
    match framing {
        Framing::Length => write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )?,
        Framing::Chunked => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )?;
            for chunk in body.as_bytes().chunks(4096) {
                write!(out, "{:x}\r\n", chunk.len())?;
                out.write_all(chunk)?;
                out.write_all(b"\r\n")?;
            }
            out.write_all(b"0\r\n\r\n")?;
        }
    }
    out.flush()?;
    // Let the client read everything before the socket goes away.
    let _ = out.shutdown(std::net::Shutdown::Write);
    let mut rest = [0u8; 256];
    let _ = reader.read(&mut rest);
    Ok(())
}
