//! The blocking websocket client loop shared by every venue: connect, subscribe, read,
//! reconnect with capped jittered exponential backoff, stop within 100 ms.
//!
//! Owns connection life and the [`Protocol`] contract a venue implements. Never parses
//! venue messages (that is the venue module's job) and never decides what a gap means
//! for a book: it only tells the protocol that the connection is gone.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use super::publish::{FeedCounters, Publisher};
use crate::event::{UnixNanos, now_nanos};

/// Longest time the loop blocks before it looks at the stop flag again.
pub const STOP_POLL: Duration = Duration::from_millis(100);

/// Why a feed stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The sink refused an event (the bus is gone, the disk is full): nothing more can be done.
    #[error("event sink refused an event: {0:#}")]
    Sink(#[from] anyhow::Error),
    /// The venue rejected what we asked for (unknown symbol, bad depth).
    #[error("{venue} rejected the subscription: {message} (check --symbols and --depth)")]
    Rejected {
        /// Venue name.
        venue: String,
        /// The venue's own words.
        message: String,
    },
    /// The options cannot work (empty symbol list, depth the venue does not offer).
    #[error("invalid feed options: {0}")]
    Options(String),
}

/// What the loop should do after a protocol handled a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Keep reading.
    Continue,
    /// Send these text messages (a resubscribe), then keep reading.
    Send(Vec<String>),
    /// Drop the connection and reconnect (the protocol has already emitted its gaps).
    Reconnect(String),
}

/// A venue's message protocol: what to send after connecting and how to normalize what
/// comes back. Implementations are plain state machines, so tests feed them captures
/// without any socket.
pub trait Protocol {
    /// Venue name (`kraken`, `coinbase`).
    fn venue(&self) -> &'static str;

    /// Messages to send right after every (re)connect, in order.
    fn subscriptions(&self) -> Vec<String>;

    /// Called for each received text frame; `ts_recv` is when it was read (ns).
    fn on_message(
        &mut self,
        text: &str,
        ts_recv: UnixNanos,
        out: &mut Publisher<'_>,
    ) -> Result<Action, FeedError>;

    /// Called once when a connection that delivered data is lost or dropped on purpose
    /// (not on a requested stop): emit gaps and forget every book.
    fn on_disconnect(
        &mut self,
        ts_recv: UnixNanos,
        out: &mut Publisher<'_>,
    ) -> Result<(), FeedError>;
}

/// Reconnect delays: `initial × 2^attempt`, capped at `max`, with "equal jitter"
/// (half fixed, half random) so many clients do not reconnect in lockstep.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Longest delay between retries.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// Delay before retry number `attempt` (0-based), using `rng` for the jitter.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX);
        let base = self.initial.saturating_mul(factor).min(self.max);
        let half = base / 2;
        let jitter_ns = rng.gen_range(0..=half.as_nanos().min(u64::MAX as u128) as u64);
        half + Duration::from_nanos(jitter_ns)
    }
}

/// How to reach the venue.
#[derive(Clone, Debug)]
pub struct WsConfig {
    /// `ws://` or `wss://` endpoint.
    pub url: String,
    /// Limit for TCP connect, TLS and websocket handshakes.
    pub connect_timeout: Duration,
    /// Reconnect when nothing at all arrived for this long (venues send heartbeats).
    pub idle_timeout: Duration,
    /// Reconnect delays.
    pub backoff: Backoff,
}

/// How one connection ended.
enum SessionEnd {
    /// The stop flag was raised.
    Stopped,
    /// The connection broke or the protocol asked for a reconnect.
    Lost(String),
}

/// Runs the connect/read/reconnect loop until `stop` is raised or a fatal error.
pub fn run(
    config: &WsConfig,
    protocol: &mut dyn Protocol,
    out: &mut Publisher<'_>,
    counters: &FeedCounters,
    stop: &AtomicBool,
) -> Result<(), FeedError> {
    let mut rng = rand::thread_rng();
    let mut attempt: u32 = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let problem = match connect(&config.url, config.connect_timeout) {
            Ok(mut socket) => {
                counters.connected.store(true, Ordering::Relaxed);
                let mut received = 0u64;
                let end = session(
                    &mut socket,
                    config,
                    protocol,
                    out,
                    counters,
                    stop,
                    &mut received,
                );
                counters.connected.store(false, Ordering::Relaxed);
                let end = match end {
                    Ok(end) => end,
                    Err(fatal) => {
                        let _ = socket.close(None);
                        return Err(fatal);
                    }
                };
                match end {
                    SessionEnd::Stopped => {
                        // Best effort: a polite close frame; the venue may already be gone.
                        let _ = socket.close(None);
                        let _ = socket.flush();
                        return Ok(());
                    }
                    SessionEnd::Lost(why) => {
                        if received > 0 {
                            protocol.on_disconnect(now_nanos(), out)?;
                            // The link worked: start the next backoff from the beginning.
                            attempt = 0;
                        }
                        why
                    }
                }
            }
            Err(why) => why,
        };
        // One line per reconnect, also under --quiet (which hides only the status line):
        // a feed that keeps reconnecting must say why.
        eprintln!("feed: {problem}; reconnecting");
        counters.set_last_error(problem);
        FeedCounters::bump(&counters.reconnects);
        let delay = config.backoff.delay(attempt, &mut rng);
        attempt = attempt.saturating_add(1);
        let deadline = Instant::now() + delay;
        while Instant::now() < deadline {
            // Heartbeats and status keep going while the venue is unreachable.
            out.tick()?;
            if !sleep_unless_stopped(
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(STOP_POLL),
                stop,
            ) {
                return Ok(());
            }
        }
    }
}

/// Sleeps `total` in slices of at most [`STOP_POLL`]; false when `stop` was raised.
pub fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + total;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(STOP_POLL));
    }
}

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// Opens TCP (with a timeout), TLS for `wss://`, and the websocket handshake; the
/// returned socket's reads time out every [`STOP_POLL`] so the stop flag is seen.
fn connect(url: &str, timeout: Duration) -> Result<Socket, String> {
    let uri: tungstenite::http::Uri = url
        .parse()
        .map_err(|e| format!("bad websocket url {url:?}: {e}"))?;
    let secure = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => return Err(format!("url {url:?} must start with ws:// or wss://")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("url {url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?;
    let mut last = format!("{host}:{port} resolved to no address");
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    let tcp = tcp.ok_or(last)?;
    let setup = |e: io::Error| format!("cannot configure socket to {host}:{port}: {e}");
    tcp.set_nodelay(true).map_err(setup)?;
    tcp.set_read_timeout(Some(timeout)).map_err(setup)?;
    tcp.set_write_timeout(Some(timeout)).map_err(setup)?;
    // A second handle on the same socket, to shorten the read timeout once the
    // handshakes (which must not be interrupted by it) are done.
    let control = tcp.try_clone().map_err(setup)?;
    if secure {
        // rustls needs one process-wide crypto provider; a second install is a no-op error.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let (socket, _response) = tungstenite::client_tls_with_config(url, tcp, None, None)
        .map_err(|e| format!("websocket handshake with {url} failed: {e}"))?;
    control.set_read_timeout(Some(STOP_POLL)).map_err(setup)?;
    Ok(socket)
}

/// A read that returned without data while the link is fine: its timeout passed, or a
/// signal (Ctrl-C) interrupted it; the loop then checks `stop`. A signal is never a lost
/// connection: treating it as one would publish gap events on a clean stop.
fn is_timeout(error: &tungstenite::Error) -> bool {
    matches!(error, tungstenite::Error::Io(e)
        if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted))
}

/// Subscribes and reads until the connection ends, the protocol asks for a reconnect,
/// or `stop` is raised. `Err` only for fatal errors.
fn session(
    socket: &mut Socket,
    config: &WsConfig,
    protocol: &mut dyn Protocol,
    out: &mut Publisher<'_>,
    counters: &FeedCounters,
    stop: &AtomicBool,
    received: &mut u64,
) -> Result<SessionEnd, FeedError> {
    for text in protocol.subscriptions() {
        if let Err(e) = socket.send(Message::text(text)) {
            return Ok(SessionEnd::Lost(format!("cannot subscribe: {e}")));
        }
    }
    let mut last_data = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(SessionEnd::Stopped);
        }
        out.tick()?;
        let message = match socket.read() {
            Ok(message) => message,
            Err(e) if is_timeout(&e) => {
                if last_data.elapsed() > config.idle_timeout {
                    return Ok(SessionEnd::Lost(format!(
                        "nothing received for {:?}",
                        config.idle_timeout
                    )));
                }
                continue;
            }
            Err(e) => return Ok(SessionEnd::Lost(format!("connection lost: {e}"))),
        };
        last_data = Instant::now();
        match message {
            Message::Text(text) => {
                let ts_recv = now_nanos();
                *received += 1;
                FeedCounters::bump(&counters.messages);
                match protocol.on_message(text.as_str(), ts_recv, out)? {
                    Action::Continue => {}
                    Action::Send(messages) => {
                        for text in messages {
                            if let Err(e) = socket.send(Message::text(text)) {
                                return Ok(SessionEnd::Lost(format!("cannot resubscribe: {e}")));
                            }
                        }
                    }
                    Action::Reconnect(why) => return Ok(SessionEnd::Lost(why)),
                }
            }
            Message::Close(frame) => {
                return Ok(SessionEnd::Lost(format!(
                    "venue closed the connection: {}",
                    frame.map_or_else(|| "no reason".to_string(), |f| f.to_string())
                )));
            }
            // Pings are answered by tungstenite itself; binary frames are not used by
            // these venues.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn backoff_doubles_is_capped_and_jitters_within_half() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        let mut rng = SmallRng::seed_from_u64(7);
        for attempt in 0..40 {
            let base = Duration::from_millis(100)
                .saturating_mul(1u32 << attempt.min(20))
                .min(Duration::from_secs(2));
            let d = backoff.delay(attempt, &mut rng);
            assert!(
                d >= base / 2 && d <= base,
                "attempt {attempt}: {d:?} vs {base:?}"
            );
        }
        let delays: Vec<Duration> = (0..8).map(|_| backoff.delay(10, &mut rng)).collect();
        assert!(
            delays.iter().any(|d| *d != delays[0]),
            "no jitter: {delays:?}"
        );
    }

    #[test]
    fn sleep_returns_early_when_stopped() {
        let stop = AtomicBool::new(true);
        let start = Instant::now();
        assert!(!sleep_unless_stopped(Duration::from_secs(10), &stop));
        assert!(start.elapsed() < Duration::from_millis(50));
    }

    #[test]
    fn connect_refused_is_reported_not_panicked() {
        // Bind then drop a listener so the port is very likely closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = connect(&format!("ws://127.0.0.1:{port}"), Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
        let err = connect("http://example.invalid", Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("ws://"), "{err}");
    }
}
