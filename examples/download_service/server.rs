//! The local HTTP server: a catalog of generated files of assorted sizes on
//! 127.0.0.1, with `Range` support, some files slow, one cut mid-body on
//! every response, one whose bytes do not match the catalog's digest, and
//! any response cut mid-body at the fail rate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use rand::rngs::SmallRng;
use rand::{Rng, RngExt, SeedableRng};
use sha2::{Digest, Sha256};

use crate::model::{Entry, Kind};

/// Sizes, cycled over the catalog (each with a little jitter).
const SIZES: [u64; 6] = [3 << 10, 48 << 10, 200 << 10, 700 << 10, 1536 << 10, 3 << 20];

/// What the server serves, and what it counts.
pub struct Files {
    pub catalog: Vec<Entry>,
    bodies: Vec<Bytes>,
    fail_rate: f64,
    pub requests: AtomicU64,
    pub ranged: AtomicU64,
    pub cut: AtomicU64,
}

/// `files` entries: every sixth slow, one truncated, one corrupt.
pub fn generate(files: usize, fail_rate: f64) -> Files {
    let mut catalog = Vec::with_capacity(files);
    let mut bodies = Vec::with_capacity(files);
    for i in 0..files {
        let kind = match i {
            1 => Kind::Truncated,
            2 => Kind::Corrupt,
            i if i % 6 == 5 => Kind::Slow,
            _ => Kind::Plain,
        };
        let len = SIZES[i % SIZES.len()] + (i as u64 * 7919) % 4096;
        let mut body = vec![0u8; len as usize];
        SmallRng::seed_from_u64(i as u64).fill_bytes(&mut body);
        let sha256 = hex::encode(Sha256::digest(&body));
        if kind == Kind::Corrupt {
            body[len as usize / 2] ^= 0xff; // one flipped byte: same length
        }
        let name = format!(
            "file-{i:03}-{}.bin",
            match kind {
                Kind::Plain => "plain",
                Kind::Slow => "slow",
                Kind::Truncated => "truncated",
                Kind::Corrupt => "corrupt",
            }
        );
        catalog.push(Entry {
            name,
            len,
            sha256,
            kind,
        });
        bodies.push(Bytes::from(body));
    }
    Files {
        catalog,
        bodies,
        fail_rate,
        requests: AtomicU64::new(0),
        ranged: AtomicU64::new(0),
        cut: AtomicU64::new(0),
    }
}

/// Serves `files` on 127.0.0.1 (a free port) until the process ends.
pub async fn start(files: Arc<Files>) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/catalog", get(catalog))
        .route("/files/{name}", get(file))
        .with_state(files);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("server: {e}");
        }
    });
    Ok(addr)
}

async fn catalog(State(files): State<Arc<Files>>) -> Json<Vec<Entry>> {
    Json(files.catalog.clone())
}

/// `Range: bytes=N-` as N (the only form the workers send).
fn range_start(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::RANGE)?.to_str().ok()?;
    value
        .strip_prefix("bytes=")?
        .strip_suffix('-')?
        .parse()
        .ok()
}

async fn file(
    State(files): State<Arc<Files>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    files.requests.fetch_add(1, Ordering::Relaxed);
    let Some(i) = files.catalog.iter().position(|e| e.name == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (entry, body) = (&files.catalog[i], files.bodies[i].clone());
    let start = range_start(&headers).unwrap_or(0);
    if start > entry.len {
        return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
    }
    let cut_at = match entry.kind {
        Kind::Truncated => Some(entry.len / 2),
        _ if start < entry.len && rand::rng().random_bool(files.fail_rate) => {
            Some(rand::rng().random_range(start..entry.len))
        }
        _ => None,
    };
    if cut_at.is_some() {
        files.cut.fetch_add(1, Ordering::Relaxed);
    }
    let slow = entry.kind == Kind::Slow;
    let stream = chunks(body, start, cut_at, slow);
    let mut response = Response::builder()
        .header(header::CONTENT_LENGTH, entry.len - start)
        .header(header::ACCEPT_RANGES, "bytes");
    if start > 0 {
        files.ranged.fetch_add(1, Ordering::Relaxed);
        response = response.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!(
                "bytes {start}-{}/{}",
                entry.len.saturating_sub(1),
                entry.len
            ),
        );
    }
    response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The body from `start`, in chunks (small and paced when slow), ending in
/// an error at `cut_at`: the connection drops with the length unmet.
fn chunks(
    body: Bytes,
    start: u64,
    cut_at: Option<u64>,
    slow: bool,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let chunk = if slow { 16 << 10 } else { 64 << 10 };
    let end = cut_at.unwrap_or(body.len() as u64).max(start);
    futures::stream::unfold(Some(start), move |at| {
        let body = body.clone();
        async move {
            let at = at?;
            if at >= end {
                // Let what was sent reach the client, then drop the
                // connection with the length unmet.
                tokio::time::sleep(Duration::from_millis(20)).await;
                return cut_at.map(|_| (Err(std::io::Error::other("cut mid-body")), None));
            }
            if slow {
                tokio::time::sleep(Duration::from_millis(8)).await;
            }
            let next = (at + chunk).min(end);
            Some((Ok(body.slice(at as usize..next as usize)), Some(next)))
        }
    })
}
