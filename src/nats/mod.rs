//! NATS JetStream as the durable, replicated, authenticated bus between machines.
//!
//! Owns everything NATS: connection options and their security rule, the mapping of bus
//! topics to subjects, the stream every publisher and recorder agrees on, the message id
//! the broker deduplicates by, and the async runtime. The rest of ticktape stays
//! synchronous: each publisher or recorder owns one small tokio runtime here, and talks
//! to it through channels.
//!
//! # Layout
//! - this file: [`NatsConfig`] (servers, TLS, user/password, `--insecure`), the
//!   loopback rule ([`check_servers`]), [`subject`] / [`topic_of_subject`], [`message_id`],
//!   the stream's creation and validation (`ensure_stream`);
//! - [`publish`]: [`NatsPublisher`], async publishing with a bounded number of acks in
//!   flight, retrying a publish the broker did not acknowledge under the same message id;
//! - [`record`]: the recorder's durable pull consumer, acking a message only after the
//!   journal holding it was flushed.
//!
//! What a subject looks like, the headers and the dedup rule are in `docs/PROTOCOL.md`
//! ("NATS JetStream"); the topology in `docs/SCALE-OUT.md`.

pub mod publish;
pub mod record;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::event::{Body, Event};
use crate::record::dedup::MessagePosition;

pub use publish::{NatsPublisher, NatsPublisherStats};

/// The header naming the ticktape publisher of a message (its `--id`), so a recorder
/// can tell heartbeats, end-of-stream and silence apart per publisher.
pub const PUBLISHER_HEADER: &str = "Ticktape-Publisher";

/// How to reach a NATS cluster and which stream to use.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// Server URLs: `nats://host:port` (plain text) or `tls://host:port`. Several
    /// servers of one cluster: the client fails over between them.
    pub servers: Vec<String>,
    /// The JetStream stream (created when missing).
    pub stream: String,
    /// First subject token of every ticktape subject (`ticktape.book.sim.BTC-USD`).
    pub subject_prefix: String,
    /// Replicas of the stream when this process creates it (1, or 3 for a cluster).
    pub replicas: usize,
    /// How long the broker remembers message ids for deduplication.
    pub duplicate_window: Duration,
    /// User name for user/password authentication.
    pub user: Option<String>,
    /// Password (from `TICKTAPE_NATS_PASSWORD`, never the command line).
    pub password: Option<String>,
    /// PEM file of the CA that signed the servers' certificates; implies TLS.
    pub ca: Option<PathBuf>,
    /// Allow plain text to a server that is not on loopback.
    pub insecure: bool,
    /// Client name shown by the server.
    pub name: String,
}

impl Default for NatsConfig {
    fn default() -> NatsConfig {
        NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            stream: "TICKTAPE".into(),
            subject_prefix: "ticktape".into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            user: None,
            password: None,
            ca: None,
            insecure: false,
            name: "ticktape".into(),
        }
    }
}

/// The environment variable a password is read from (`--nats-user` names the user).
pub const PASSWORD_ENV: &str = "TICKTAPE_NATS_PASSWORD";

/// True when `url` names a NATS server (`nats://` or `tls://`).
pub fn is_nats_url(url: &str) -> bool {
    url.starts_with("nats://") || url.starts_with("tls://")
}

/// Host part of a server URL (`nats://user:pw@host:port` → `host`).
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = rest.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    rest.rsplit_once(':').map_or(rest, |(h, _)| h)
}

/// True for `localhost`, `127.0.0.0/8` and `::1`.
pub fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The security rule of every NATS link: each server URL must be `nats://` or
/// `tls://`, carry no credentials in the URL, and a plain-text URL to a host that is
/// not loopback is refused unless `insecure` (market data and passwords would cross the
/// network in the clear). With a CA file every link is TLS whatever the scheme says.
pub fn check_servers(config: &NatsConfig) -> Result<()> {
    if config.servers.is_empty() {
        bail!("no NATS server given: pass --nats nats://127.0.0.1:4222 (or tls://host:port)");
    }
    for url in &config.servers {
        if !is_nats_url(url) {
            bail!("{url:?} is not a NATS server URL: write nats://host:port or tls://host:port");
        }
        let rest = url.split_once("://").map_or("", |(_, r)| r);
        if rest.contains('@') {
            bail!(
                "{url:?} carries credentials: give the user with --nats-user and the password in {PASSWORD_ENV}, so they do not show in the process list"
            );
        }
        let host = host_of(url);
        if host.is_empty() {
            bail!("{url:?} names no host: write nats://host:port");
        }
        let tls = url.starts_with("tls://") || config.ca.is_some();
        if !tls && !is_loopback(host) && !config.insecure {
            bail!(
                "refusing plain-text NATS connection to {url}: {host} is not loopback, so market data{} would cross the network unencrypted. Use tls://{host}:PORT with --nats-ca CA.pem, or pass --insecure if this network is trusted",
                if config.user.is_some() {
                    " and the password"
                } else {
                    ""
                }
            );
        }
    }
    if config.user.is_some() != config.password.is_some() {
        bail!(
            "NATS user/password authentication needs both: --nats-user NAME and the password in the environment variable {PASSWORD_ENV}"
        );
    }
    if let Some(ca) = &config.ca
        && !ca.is_file()
    {
        bail!(
            "NATS CA file {} does not exist: give the PEM file of the CA that signed the servers' certificates",
            ca.display()
        );
    }
    Ok(())
}

/// Percent-encodes one topic piece into a subject token: `%`, `*`, `>`, space and
/// anything outside printable ASCII become `%XX`; an empty piece becomes a lone `%`.
fn push_token(piece: &str, out: &mut String) {
    if piece.is_empty() {
        out.push('%');
        return;
    }
    for b in piece.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'%' | b'*' | b'>') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The subject of a bus topic: `<prefix>.` then the topic with each `.`-separated piece
/// made a valid token (`push_token`). `book.sim.BTC-USD` → `ticktape.book.sim.BTC-USD`;
/// `trade.cme.ES Z5` → `ticktape.trade.cme.ES%20Z5`. [`topic_of_subject`] inverts it.
pub fn subject(prefix: &str, topic: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + topic.len() + 8);
    out.push_str(prefix);
    for piece in topic.split('.') {
        out.push('.');
        push_token(piece, &mut out);
    }
    out
}

/// The bus topic of a subject made by [`subject`]; None when it is not under `prefix`
/// or a `%` escape is broken.
pub fn topic_of_subject(prefix: &str, subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let mut out = Vec::with_capacity(rest.len());
    for (i, token) in rest.split('.').enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        if token == "%" {
            continue;
        }
        let bytes = token.as_bytes();
        let mut k = 0;
        while k < bytes.len() {
            if bytes[k] == b'%' {
                let hex = std::str::from_utf8(bytes.get(k + 1..k + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                k += 3;
            } else {
                out.push(bytes[k]);
                k += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The subject filter of a recorder's `--topic` prefix: a prefix ending at a piece
/// boundary (`book.`, `trade.binance.`) or a whole topic (`trade.binance.BTCUSDT`).
/// NATS filters match whole tokens only, so `trade.binance.BTC` (part of a symbol) cannot
/// be expressed and is refused.
pub fn filter_of_topic_prefix(prefix: &str, topic_prefix: &str) -> Result<String> {
    if let Some(stem) = topic_prefix.strip_suffix('.') {
        return Ok(format!("{}.>", subject(prefix, stem)));
    }
    let pieces = topic_prefix.split('.').count();
    if pieces >= 3
        || (pieces == 2 && (topic_prefix.starts_with("hb.") || topic_prefix.starts_with("eos.")))
    {
        return Ok(subject(prefix, topic_prefix));
    }
    bail!(
        "--topic {topic_prefix:?} over NATS must end with '.' (book., trade.binance.) or be a whole topic (trade.binance.BTCUSDT): NATS filters match whole subject tokens"
    )
}

/// The broker's deduplication id of an event: what the *venue* said, never who relayed
/// it, so two regional publishers of one feed send the same id for the same event.
/// `venue|symbol|kind|venue_seq|key`, where `key` is the recorder's own dedup key (a hash
/// of the venue's content; the n-th identical copy inside one venue message gets its own,
/// see [`MessagePosition`]). Heartbeats and end-of-stream are the publisher's own:
/// `hb|publisher|pub_seq`, `eos|publisher`.
pub fn message_id(event: &Event, position: &mut MessagePosition, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    match &event.body {
        Body::Heartbeat(h) => {
            let _ = write!(out, "hb|{}|{}", h.publisher, event.pub_seq);
        }
        Body::EndOfStream(e) => {
            let _ = write!(out, "eos|{}", e.publisher);
        }
        _ => {
            let key = position.key(event);
            let _ = write!(
                out,
                "{}|{}|{}|",
                event.venue,
                event.symbol,
                event.kind().name()
            );
            match event.venue_seq {
                Some(s) => {
                    let _ = write!(out, "{s}");
                }
                None => out.push('-'),
            }
            let _ = write!(out, "|{key:016x}");
        }
    }
}

/// A tokio runtime owned by one NATS component (one worker thread): the only place
/// ticktape runs async code.
pub(crate) fn runtime(name: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(format!("ticktape-nats-{name}"))
        .enable_all()
        .build()
        .context("cannot start the NATS client's runtime")
}

/// Connects with the configuration's security settings (checked first).
pub(crate) async fn connect(config: &NatsConfig) -> Result<async_nats::Client> {
    check_servers(config)?;
    let mut options = async_nats::ConnectOptions::new()
        .name(&config.name)
        .connection_timeout(Duration::from_secs(5))
        // The security rule was checked for these URLs only: never follow a server's
        // advertisement to other (perhaps plain-text, non-loopback) addresses.
        .ignore_discovered_servers();
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(ca) = &config.ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    } else if config.servers.iter().any(|s| s.starts_with("tls://")) {
        options = options.require_tls(true);
    }
    let servers: Vec<async_nats::ServerAddr> = config
        .servers
        .iter()
        .map(|s| {
            s.parse()
                .with_context(|| format!("bad NATS server URL {s:?}: write nats://host:port"))
        })
        .collect::<Result<_>>()?;
    options.connect(servers).await.with_context(|| {
        format!(
            "cannot connect to NATS at {} (is nats-server running with JetStream? are the user, password and CA right?)",
            config.servers.join(",")
        )
    })
}

/// The stream every ticktape publisher and recorder of a cluster uses: created when
/// missing (file storage, `replicas`, the dedup window), validated when present: it must
/// take `<prefix>.>` and deduplicate (a duplicate window above zero). A cluster that is
/// still electing its leaders is given 20 seconds.
pub(crate) async fn ensure_stream(
    js: &async_nats::jetstream::Context,
    config: &NatsConfig,
) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match try_ensure_stream(js, config).await {
            Ok(()) => return Ok(()),
            Err(Attempt::Refused(e)) => return Err(e),
            Err(Attempt::Failed(e)) if std::time::Instant::now() >= deadline => return Err(e),
            Err(Attempt::Failed(_)) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Why [`try_ensure_stream`] did not succeed: a stream that does not fit (final), or a
/// failed request (worth repeating while a cluster starts).
enum Attempt {
    Refused(anyhow::Error),
    Failed(anyhow::Error),
}

async fn try_ensure_stream(
    js: &async_nats::jetstream::Context,
    config: &NatsConfig,
) -> std::result::Result<(), Attempt> {
    use async_nats::jetstream::stream;
    let wanted = format!("{}.>", config.subject_prefix);
    match js.get_stream(&config.stream).await {
        Ok(mut existing) => {
            let info = existing.info().await.map_err(|e| {
                Attempt::Failed(anyhow::anyhow!("cannot read stream {}: {e}", config.stream))
            })?;
            let subjects = &info.config.subjects;
            if !subjects.iter().any(|s| s == &wanted || s == ">") {
                return Err(Attempt::Refused(anyhow::anyhow!(
                    "stream {} exists but takes subjects {:?}, not {wanted}: use another --stream, or the --subject-prefix it was made for",
                    config.stream,
                    subjects
                )));
            }
            if info.config.duplicate_window.is_zero() {
                return Err(Attempt::Refused(anyhow::anyhow!(
                    "stream {} has no duplicate window, so the broker would not deduplicate redundant publishers: give it one (e.g. nats stream edit {} --dupe-window 2m)",
                    config.stream,
                    config.stream
                )));
            }
            Ok(())
        }
        Err(e)
            if matches!(
                e.kind(),
                async_nats::jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            js.create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: vec![wanted.clone()],
                storage: stream::StorageType::File,
                num_replicas: config.replicas.max(1),
                duplicate_window: config.duplicate_window,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| {
                Attempt::Failed(anyhow::anyhow!(
                    "cannot create stream {} for {wanted} with {} replica(s): {e} (are there that many JetStream servers in the cluster?)",
                    config.stream,
                    config.replicas
                ))
            })
        }
        Err(e) => Err(Attempt::Failed(anyhow::anyhow!(
            "cannot look up stream {}: {e} (is JetStream enabled on the server?)",
            config.stream
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Fixed, Side, Trade};

    #[test]
    fn subjects_round_trip_to_topics_whatever_the_symbol() {
        for topic in [
            "book.sim.BTC-USD",
            "trade.kraken.XBT/USD",
            "trade.cme.ES Z5",
            "book.v.a*b>c%d",
            "hb.feed-1",
            "book.venue.x.BRK.B",
            "book.v.A..B",
        ] {
            let s = subject("ticktape", topic);
            assert!(
                !s.contains(' ') && !s.contains('*') && !s.contains('>') && !s.contains(".."),
                "{s}"
            );
            assert_eq!(topic_of_subject("ticktape", &s).as_deref(), Some(topic));
        }
        assert_eq!(subject("tt", "book.sim.BTC-USD"), "tt.book.sim.BTC-USD");
        assert_eq!(subject("tt", "trade.cme.ES Z5"), "tt.trade.cme.ES%20Z5");
        assert_eq!(topic_of_subject("tt", "other.book.x.y"), None);
        assert_eq!(topic_of_subject("tt", "tt.book.x.%G1"), None);
    }

    #[test]
    fn topic_prefixes_map_to_whole_token_filters_or_are_refused() {
        assert_eq!(filter_of_topic_prefix("tt", "book.").unwrap(), "tt.book.>");
        assert_eq!(
            filter_of_topic_prefix("tt", "trade.binance.BTCUSDT").unwrap(),
            "tt.trade.binance.BTCUSDT"
        );
        let e = filter_of_topic_prefix("tt", "trade.binance").unwrap_err();
        assert!(e.to_string().contains("must end with '.'"), "{e}");
    }

    #[test]
    fn plain_text_off_loopback_is_refused_unless_insecure() {
        let mut c = NatsConfig {
            servers: vec!["nats://10.1.2.3:4222".into()],
            ..NatsConfig::default()
        };
        let e = check_servers(&c).unwrap_err().to_string();
        assert!(
            e.contains("refusing plain-text") && e.contains("--insecure"),
            "{e}"
        );
        c.insecure = true;
        check_servers(&c).unwrap();
        c.insecure = false;
        for ok in [
            "nats://127.0.0.1:4222",
            "nats://localhost:4222",
            "nats://[::1]:4222",
            "tls://10.1.2.3:4222",
        ] {
            c.servers = vec![ok.into()];
            check_servers(&c).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        c.servers = vec!["nats://u:p@127.0.0.1:4222".into()];
        assert!(
            check_servers(&c)
                .unwrap_err()
                .to_string()
                .contains(PASSWORD_ENV)
        );
        c.servers = vec!["tcp://127.0.0.1:4222".into()];
        assert!(check_servers(&c).is_err());
        c.servers = vec!["nats://127.0.0.1:4222".into()];
        c.user = Some("u".into());
        assert!(
            check_servers(&c)
                .unwrap_err()
                .to_string()
                .contains("needs both")
        );
    }

    #[test]
    fn message_ids_name_the_venue_event_not_the_publisher() {
        let trade = |pub_seq, ts_recv| {
            let mut e = crate::wire::event(
                "sim",
                "BTC-USD",
                ts_recv,
                pub_seq,
                Body::Trade(Trade {
                    price: Fixed::new(100, 2),
                    size: Fixed::new(1, 0),
                    aggressor: Side::Bid,
                    trade_id: "77".into(),
                }),
            );
            e.venue_seq = Some(77);
            e.prev_venue_seq = Some(76);
            e.ts_event = 5;
            e
        };
        let (mut a, mut b) = (String::new(), String::new());
        // Two publishers: other publisher sequence and receive time, same venue event.
        message_id(&trade(3, 100), &mut MessagePosition::default(), &mut a);
        message_id(&trade(9, 250), &mut MessagePosition::default(), &mut b);
        assert_eq!(a, b);
        assert!(a.starts_with("sim|BTC-USD|trade|77|"), "{a}");
        let mut other = trade(3, 100);
        other.venue_seq = Some(78);
        message_id(&other, &mut MessagePosition::default(), &mut b);
        assert_ne!(a, b);
    }
}
