//! The HTTP side of the metrics: the endpoint (`/metrics`, `/healthz`, `/readyz`), starting
//! it for a `run` process, and a minimal client for the demo and tests.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use tidemark_sources::KafkaSource;

use super::{Level, Metrics, Thresholds};

/// The HTTP endpoint of a run; stops listening when dropped.
pub struct Endpoint {
    server: Arc<tiny_http::Server>,
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// Serves `metrics` on `addr`: `GET /metrics`, `/healthz`, `/readyz`.
pub fn serve(addr: &str, metrics: Metrics) -> Result<Endpoint> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| anyhow!("metrics: cannot listen on {addr}: {e}"))?;
    let local = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow!("metrics: {addr} is not an IP address"))?;
    let server = Arc::new(server);
    let s = server.clone();
    std::thread::spawn(move || {
        for req in s.incoming_requests() {
            let (code, body, ctype) = match req.url() {
                "/metrics" => match metrics.encode() {
                    Ok(text) => (
                        200,
                        text,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                    Err(e) => (500, e.to_string(), "text/plain"),
                },
                "/healthz" => (200, "ok\n".to_owned(), "text/plain"),
                "/readyz" => {
                    let (level, reasons) = metrics.health();
                    let code = if level == Level::Red { 503 } else { 200 };
                    let mut body = format!("{}\n", level.as_str());
                    for r in reasons {
                        body.push_str(&r);
                        body.push('\n');
                    }
                    (code, body, "text/plain")
                }
                _ => (404, "not found\n".to_owned(), "text/plain"),
            };
            let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes());
            let mut resp = tiny_http::Response::from_string(body).with_status_code(code);
            if let Ok(h) = header {
                resp = resp.with_header(h);
            }
            let _ = req.respond(resp);
        }
    });
    Ok(Endpoint {
        server,
        addr: local,
    })
}

/// The metrics of a `run` process per its profile: `None` when `wiring.metrics_addr` is
/// empty; otherwise the metrics, served on that address (port + `process` for process
/// `process` of a cluster), probing the ingress broker when the ingress is Kafka.
pub fn start(
    profile: &crate::config::Profile,
    process: usize,
    ingress: &crate::run::Ingress,
) -> Result<Option<(Metrics, Endpoint)>> {
    let addr = profile.wiring.metrics_addr.trim();
    if addr.is_empty() {
        return Ok(None);
    }
    let mut sock: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| anyhow!("wiring.metrics_addr {addr:?} is not ip:port: {e}"))?;
    if sock.port() != 0 {
        let port = u16::try_from(usize::from(sock.port()) + process).map_err(|_| {
            anyhow!(
                "wiring.metrics_addr: port {} + process {process} overflows",
                sock.port()
            )
        })?;
        sock.set_port(port);
    }
    let metrics = Metrics::new(Thresholds {
        max_lag: profile.wiring.ready_max_lag,
        max_watermark_age: profile.wiring.ready_max_watermark_age,
    });
    let endpoint = serve(&sock.to_string(), metrics.clone())?;
    if let crate::run::Ingress::Kafka { conn, topic, .. } = ingress {
        metrics.probe(KafkaSource::new(
            conn.clone(),
            topic,
            tidemark_sources::KafkaStart::Beginning,
            tidemark_sources::KafkaEnd::Latest,
        ));
    }
    Ok(Some((metrics, endpoint)))
}

/// `GET http://addr/path` over plain HTTP/1.0: the status code and body (for the demo and
/// tests; scrapers use their own clients).
pub fn get(addr: &str, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {path}: no HTTP response"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("GET {path}: bad status line {head:?}"))?;
    Ok((code, body.to_owned()))
}

/// The value of the sample `name{labels}` in a Prometheus text exposition (`labels` as
/// written, e.g. `status="ADMITTED",reason=""`; empty for none).
pub fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines().find_map(|l| {
        l.strip_prefix(&key)?
            .strip_prefix(' ')?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}
