//! A local websocket server that replays a capture's received messages, so feeds are
//! tested over real TCP without touching the internet.
//!
//! Owns the replay side only: accept (one client at a time, on `127.0.0.1:0`), wait for
//! the client's first message (its subscription), then send every captured message byte
//! for byte, paced by the capture's own timestamps divided by a speed factor or as fast
//! as possible, optionally dropping the connection after N messages to exercise
//! reconnects. Never interprets the messages it sends.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

use crate::event::UnixNanos;

/// How the server replays.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// `None`: as fast as possible. `Some(f)`: the capture's inter-message times divided by `f`.
    pub speed: Option<f64>,
    /// Entry `k` drops connection `k` (0-based) abruptly after that many messages;
    /// connections past the list get the whole capture.
    pub drop_after: Vec<usize>,
}

#[derive(Default)]
struct State {
    connections: AtomicUsize,
    from_clients: Mutex<Vec<String>>,
}

/// A running replay server; dropping it stops the server thread.
pub struct ReplayServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl ReplayServer {
    /// Binds `127.0.0.1:0` and starts serving `messages` (receive time, text) to each client.
    pub fn start(
        messages: Vec<(UnixNanos, String)>,
        options: ReplayOptions,
    ) -> io::Result<ReplayServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(State::default());
        let thread = {
            let (stop, state) = (stop.clone(), state.clone());
            std::thread::Builder::new()
                .name("ws-replay-server".into())
                .spawn(move || serve(listener, &messages, &options, &stop, &state))?
        };
        Ok(ReplayServer {
            addr,
            stop,
            state,
            thread: Some(thread),
        })
    }

    /// `ws://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Every text message clients sent (subscriptions, resubscriptions), in order.
    pub fn client_messages(&self) -> Vec<String> {
        self.state
            .from_clients
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    listener: TcpListener,
    messages: &[(UnixNanos, String)],
    options: &ReplayOptions,
    stop: &AtomicBool,
    state: &State,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let index = state.connections.fetch_add(1, Ordering::SeqCst);
                let drop_after = options.drop_after.get(index).copied();
                // A failing client only ends its own connection.
                let _ = handle(stream, messages, options.speed, drop_after, stop, state);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn is_timeout(error: &tungstenite::Error) -> bool {
    matches!(error, tungstenite::Error::Io(e)
        if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

fn handle(
    stream: TcpStream,
    messages: &[(UnixNanos, String)],
    speed: Option<f64>,
    drop_after: Option<usize>,
    stop: &AtomicBool,
    state: &State,
) -> Result<(), tungstenite::Error> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    // Generous: a slow (debug-built) client may take seconds to digest a burst, and a
    // write timeout here would look like a venue dropping the connection.
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let control = stream.try_clone()?;
    let mut ws = tungstenite::accept(stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => {
            tungstenite::Error::Io(io::ErrorKind::TimedOut.into())
        }
    })?;
    control.set_read_timeout(Some(Duration::from_millis(20)))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    // Nothing is sent before the client subscribes, as a venue would.
    loop {
        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
            return Ok(());
        }
        match ws.read() {
            Ok(Message::Text(text)) => {
                record(state, text.as_str());
                break;
            }
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    replay(&mut ws, messages, speed, drop_after, stop)?;
    if drop_after.is_some_and(|n| n < messages.len()) {
        // The loss under test: no close frame, just the end of the TCP stream. Shutting
        // down the write side first (rather than dropping a socket whose receive buffer
        // still holds the client's later subscriptions, which makes the kernel send a
        // reset that discards data in flight) keeps the cut exactly at message N.
        control.shutdown(Shutdown::Write)?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
            match ws.read() {
                Ok(Message::Text(text)) => record(state, text.as_str()),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(_) => break,
            }
        }
        return Ok(());
    }
    // Stay connected like a venue would, answering pings and closes, until told to stop.
    while !stop.load(Ordering::SeqCst) {
        match ws.read() {
            Ok(Message::Text(text)) => record(state, text.as_str()),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

fn record(state: &State, text: &str) {
    if let Ok(mut v) = state.from_clients.lock() {
        v.push(text.to_string());
    }
}

fn replay(
    ws: &mut WebSocket<TcpStream>,
    messages: &[(UnixNanos, String)],
    speed: Option<f64>,
    drop_after: Option<usize>,
    stop: &AtomicBool,
) -> Result<(), tungstenite::Error> {
    let start = Instant::now();
    let t0 = messages.first().map_or(0, |m| m.0);
    for (i, (ts, text)) in messages.iter().enumerate() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if drop_after == Some(i) {
            break;
        }
        if let Some(speed) = speed.filter(|s| *s > 0.0) {
            let offset = Duration::from_nanos(((ts - t0).max(0) as f64 / speed) as u64);
            let due = start + offset;
            let now = Instant::now();
            if due > now {
                ws.flush()?;
                std::thread::sleep(due - now);
            }
        }
        ws.write(Message::text(text.as_str()))?;
        if i % 64 == 63 {
            ws.flush()?;
        }
    }
    ws.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_bytes_after_subscribe_and_drops_when_told() {
        let messages: Vec<(UnixNanos, String)> = (0..10)
            .map(|i| (i * 1_000_000, format!("{{\"n\": {i}, \"s\": \"é\"}}")))
            .collect();
        let server = ReplayServer::start(
            messages.clone(),
            ReplayOptions {
                speed: Some(10.0),
                drop_after: vec![4],
            },
        )
        .unwrap();
        let (mut ws, _) = tungstenite::connect(server.url()).unwrap();
        ws.send(Message::text("{\"event\":\"subscribe\"}")).unwrap();
        let mut got = Vec::new();
        loop {
            match ws.read() {
                Ok(Message::Text(t)) => got.push(t.as_str().to_string()),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let expected: Vec<String> = messages.iter().take(4).map(|m| m.1.clone()).collect();
        assert_eq!(got, expected);
        let (mut ws, _) = tungstenite::connect(server.url()).unwrap();
        ws.send(Message::text("again")).unwrap();
        let mut all = Vec::new();
        while all.len() < 10 {
            if let Message::Text(t) = ws.read().unwrap() {
                all.push(t.as_str().to_string());
            }
        }
        assert_eq!(
            all,
            messages.iter().map(|m| m.1.clone()).collect::<Vec<_>>()
        );
        assert_eq!(server.connections(), 2);
        assert_eq!(
            server.client_messages(),
            vec!["{\"event\":\"subscribe\"}", "again"]
        );
    }
}
